"""The training-aware rows of benchmarks/compression.py: quantization-aware training and product
quantization of a trained model, each setting of a small grid compiled and the best chosen on
validation rows (AUC, or recall@10 for two-tower); the driver reports it on test rows."""
from __future__ import annotations

import time

import numpy as np

from edgecompress.metrics import evaluate_ctr, evaluate_retrieval
from edgecompress.passes import LinearInt8Weights
from edgecompress.passes.product_quant import ProductQuant
from edgecompress.passes.qat import QAT

DIM = 64                  # the benchmark models' embedding width (compression.DIM)


def _bundle_metric(path, data) -> float:
    """The bundle's AUC (CTR rows) or recall@10 (retrieval users) on ``data``: how settings are chosen."""
    import edgecompress_runtime as ecr
    m = ecr.load(path, backend="numpy")
    fn = lambda f: np.asarray(m.predict(f), dtype=np.float32).reshape(-1)   # noqa: E731
    if hasattr(data, "test_user"):
        return evaluate_retrieval(fn, data)["recall@10"]
    return evaluate_ctr(fn, data)["auc"]


# chosen per bit width on validation rows. lr 1e-3 for 1-3 epochs cost 0.006-0.008 test AUC on the
# full synthetic DLRM (dim 64; the source model is already at its best after 2 epochs: more training overfits)
QAT_GRID = ({"epochs": 1.0, "lr": 1e-4}, {"epochs": 1.0, "lr": 1e-3})
QAT_BITS = ((4, True), (2, True), (1, True))


def _best_on_validation(candidates, va, timed):
    """``candidates``: (pass config, plan, bundle path); compiles each and returns (validation
    metric, config, result, compile seconds, load before) of the best on the validation rows."""
    best = None
    for cfg, plan, out in candidates:
        res, s, l0 = timed(output=out, plan=plan)
        v = _bundle_metric(res.path, va)
        if best is None or v > best[0]:
            best = (v, cfg, res, s, l0)
    return best


def _pass_seconds(model, tr, cfg) -> float:
    """The pass's own time on the lowered source model (compile adds export time)."""
    from edgecompress.graph import lower
    from edgecompress.graph.io import CallConvention
    from edgecompress.passes import PassContext, apply_pass
    call = CallConvention.infer(model, tr.inputs)
    prog = lower(model, {k: np.asarray(tr.inputs[k][:8]) for k in call.names}, call)
    t = time.perf_counter()
    apply_pass(prog, cfg, ctx=PassContext(teacher=model, train_data=tr))
    return time.perf_counter() - t


def qat_rows(model, name, kind, tr, va, te, tmp, timed) -> dict:
    """Quantization-aware training from the trained model (distillation + labels on train rows): per
    bit width, the QAT_GRID setting with the best validation AUC (recall@10 for two-tower); its test
    AUC is reported. The training time is the QAT pass's own (``_pass_seconds``)."""
    out = {}
    for bits, lin in QAT_BITS:
        cfgs = [QAT(bits=bits, linear_int8=lin, **g) for g in QAT_GRID]
        v, cfg, res, s, l0 = _best_on_validation(
            [(c, [c], tmp / f"{name}-{kind}-qat{bits}-{c.epochs:g}-{c.lr:g}.ecb") for c in cfgs], va, timed)
        label = f"QAT int{bits} rows" + (" + int8 Linear" if lin else "")
        out[label] = (res, s, l0, {"qat": cfg.to_dict(), "qat_train_s": _pass_seconds(model, tr, cfg),
                                   "value_valid_qat": v, "grid": list(QAT_GRID)})
    return out


# product quantization (passes/product_quant.py), M sub-vectors of DIM/M values, codes of `bits`, K
# codebook entries per sub-space, with int8 Linear: per shape, k-means only vs k-means + codebook
# fine-tuning, chosen on validation rows. K = 64 with 8-bit codes: small tables (MovieLens), where
# 256-entry codebooks (K*DIM*2 bytes a table) outweigh the codes
PQ_SHAPES = ((DIM // 4, 8, 256), (DIM // 8, 8, 256), (DIM // 8, 8, 64), (DIM // 16, 8, 64), (DIM // 4, 4, 16),
             (DIM // 8, 4, 16), (DIM // 16, 4, 16))
PQ_FINETUNE = ({"finetune_epochs": 0.0}, {"finetune_epochs": 1.0, "lr": 1e-3}, {"finetune_epochs": 3.0, "lr": 3e-3},
               {"finetune_epochs": 1.0, "lr": 1e-3, "train_dense": True})


def pq_rows(model, name, kind, tr, va, te, tmp, timed, training=True) -> dict:
    """Per PQ shape, the PQ_FINETUNE setting with the best validation AUC / recall@10 (k-means only when
    ``training`` is off); its test AUC is reported. ``qat_train_s``: the pass's own time (k-means
    + fine-tuning, ``_pass_seconds``)."""
    out = {}
    for m, bits, k in PQ_SHAPES:
        cfgs = [ProductQuant(sub_vectors=m, bits=bits, entries=k, **g)
                for g in (PQ_FINETUNE if training else PQ_FINETUNE[:1])]
        v, cfg, res, s, l0 = _best_on_validation(
            [(c, [c, LinearInt8Weights()], tmp / f"{name}-{kind}-pq{m}x{bits}x{k}-{c.finetune_epochs:g}"
              f"{'-dense' if c.train_dense else ''}.ecb") for c in cfgs], va, timed)
        ft = f" +ft {cfg.finetune_epochs:g} ep" + (" (+MLP)" if cfg.train_dense else "") if cfg.finetune_epochs else ""
        label = f"PQ M={m} {bits}-bit K={k}{ft} + int8 Linear"
        out[label] = (res, s, l0, {"pq": cfg.to_dict(), "qat_train_s": _pass_seconds(model, tr, cfg),
                                   "value_valid_pq": v, "grid": list(PQ_FINETUNE) if training else []})
    return out
