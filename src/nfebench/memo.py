"""What a sweep run in one process (Hydra's basic or joblib launcher) loads once instead of once per point: the model
and the reference features (docs/cluster.md; bench/sweep_overhead.py measures the difference).

One entry each (the last model, the last two references), so a sweep over models holds one model at a time. A
model is reused only when everything that built it is equal (kind, device, every loader option, and the size and
modification time of the files a path option names); a run does not mutate it (runtime options wrap it in a new
EpsModel; its call counter and a latent model's decode timer are reset per run). The reference side of FID and KID
(mean and covariance square root, the reference's own kernel sums) is then computed once per reference tensor as
well (nfebench.metrics.from_features.reference_term). NFEBENCH_NO_MEMO=1 turns both off.
"""

from __future__ import annotations

import json
import os

_MODEL: dict = {}
_REFERENCE: dict = {}


def _on() -> bool:
    return os.environ.get("NFEBENCH_NO_MEMO") != "1"


def _stamp(value) -> list:
    """For a loader option naming a file or directory: its files' sizes and modification times (a checkpoint
    rewritten in place is loaded again); [] otherwise."""
    if not isinstance(value, str) or not value or not os.path.exists(value):
        return []
    if os.path.isfile(value):
        st = os.stat(value)
        return [[value, st.st_size, st.st_mtime_ns]]
    out = []
    for root, _, files in os.walk(value):
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            out.append([os.path.join(root, f), st.st_size, st.st_mtime_ns])
    return out


def load_model(kind: str, device: str, **opts):
    """nfebench.models.load_model(kind, device=device, **opts), reusing the previous point's model when equal."""
    from .models import load_model as load

    key = json.dumps([kind, str(device), opts, [_stamp(v) for v in opts.values()]], sort_keys=True, default=str)
    model = _MODEL.get(key) if _on() else None
    if model is None:
        model = load(kind, device=device, **opts)
        _MODEL.clear()
        if _on():
            _MODEL[key] = model
    if hasattr(model, "calls"):
        model.calls = 0  # its forward-call counter is per run
    if getattr(model, "decoder", None) is not None and hasattr(model.decoder, "seconds"):
        model.decoder.seconds = 0.0  # decode_seconds is per run
    return model


def reference_for(p, weights_path, progress=True):
    """nfebench.run.reference_for(p, ...), reusing the features of an equal reference (dataset, its options, the
    extractor and its weights, metrics.reference_stats)."""
    from .run import reference_for as compute

    key = json.dumps([p.dataset.get("name"), p.dataset.get("options"), p.metrics.get("feature_extractor"),
                      str(weights_path), p.metrics.get("reference_stats"), str(p.device),
                      _stamp(weights_path), _stamp(p.metrics.get("reference_stats"))], sort_keys=True, default=str)
    if not _on():
        return compute(p, weights_path, progress)
    if key not in _REFERENCE:
        if len(_REFERENCE) >= 2:
            _REFERENCE.pop(next(iter(_REFERENCE)))
        _REFERENCE[key] = compute(p, weights_path, progress)
    return _REFERENCE[key]
