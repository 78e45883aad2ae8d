"""Prompt sets for text-to-image runs: `prompts=FILE|builtin`, one caption per sample by the sample's index.

FILE is a text file (one caption a line; blank lines skipped), a CSV with a `caption` column (as COCO-30k caption
files are distributed) or JSON lines (each line an object with a `caption` key). Sample i gets caption i mod the
number of captions (cycled if the file is shorter than num_samples). `builtin` (or null) is the small set shipped in
nfebench/data/prompts_builtin.txt, for smoke runs. The row's `prompts` column is `NAME@HASH`: the file's name and
the first 12 hex digits of the SHA-256 of its bytes, so two runs on the same captions are recognisably so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

BUILTIN = Path(__file__).parent / "data" / "prompts_builtin.txt"


class PromptsError(ValueError):
    """A prompts file missing, empty or without captions: the message names it and what is allowed."""


def _captions(path: Path, text: str) -> list[str]:
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if "caption" not in (reader.fieldnames or []):
            raise PromptsError(f"prompts file {str(path)!r} has no 'caption' column (columns: "
                               f"{', '.join(reader.fieldnames or []) or 'none'}); a CSV needs one caption per row in "
                               f"a column named caption")
        return [r["caption"].strip() for r in reader if (r["caption"] or "").strip()]
    if path.suffix.lower() == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise PromptsError(f"prompts file {str(path)!r}, line {n}: not JSON") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("caption"), str):
                raise PromptsError(f"prompts file {str(path)!r}, line {n}: no 'caption' string; a .jsonl needs "
                                   f'one object per line like {{"caption": "..."}}')
            out.append(obj["caption"].strip())
        return out
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_prompts(spec) -> tuple[list[str], str]:
    """(captions, label NAME@HASH) of prompts=spec: a path (.txt / .csv / .jsonl) or `builtin` (or None)."""
    path = BUILTIN if spec in (None, "builtin") else Path(str(spec)).expanduser()
    if not path.is_file():
        raise PromptsError(f"prompts file {str(spec)!r} does not exist; pass prompts=FILE (.txt: a caption a line; "
                           f".csv: a caption column; .jsonl: a caption key) or prompts=builtin")
    data = path.read_bytes()
    captions = _captions(path, data.decode("utf-8", errors="replace"))
    if not captions:
        raise PromptsError(f"prompts file {str(path)!r} has no captions; it needs at least one non-empty caption")
    name = "builtin" if path == BUILTIN else path.name
    return captions, f"{name}@{hashlib.sha256(data).hexdigest()[:12]}"


def assign(captions: list[str], num_samples: int) -> list[str]:
    """Sample i's caption: captions[i mod len(captions)]."""
    return [captions[i % len(captions)] for i in range(num_samples)]
