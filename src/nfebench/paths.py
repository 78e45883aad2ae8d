"""Where nfebench's own files are: the repository (nfebench is installed editable) and its Hydra configs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"


def portable(value):
    """`value` with paths inside the repository written relative to it (`${nfebench_root:}/...`), recursively, so
    that run keys are the same in every clone."""
    if isinstance(value, str) and value.startswith(str(ROOT)):
        return "${nfebench_root:}" + value[len(str(ROOT)):]
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    return value
