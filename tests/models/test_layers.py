"""Model layers against direct NumPy implementations, their gradients against finite
differences, parameter names, and the example model files."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest

import tinyc as tc
from tests.gradcheck import check_grad
from tinyc.models import (
    EncoderLayer,
    FeedForward,
    LayerNorm,
    Linear,
    MultiHeadAttention,
    SingleHeadAttention,
    TransformerClassifier,
    accuracy,
    softmax_cross_entropy,
    softmax_loss,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
B, T = 3, 5


# --------------------------------------------------------------------------- helpers


def random_params(builder, rng, scale: float = 0.3) -> dict[str, np.ndarray]:
    """A random f64 value for every parameter traced so far (gains around 1)."""
    values = {}
    for name, p in builder.params.items():
        v = rng.standard_normal(p.type.shape) * scale
        values[name] = v + 1.0 if name.endswith(".gain") else v
    return values


def run(outputs, feeds: dict, params: dict[str, np.ndarray]):
    """Evaluate `outputs` with the inputs in `feeds` and parameter values overridden by `params`."""
    b = (outputs if isinstance(outputs, tc.Tensor) else outputs[0]).builder
    ins = list(feeds) + [b.tensor(name) for name in params]
    return tc.function(outputs, ins)(*feeds.values(), *params.values())


def np_linear(p, name, x):
    return x @ p[f"{name}.w"] + p[f"{name}.b"]


def np_layer_norm(p, name, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p[f"{name}.gain"] + p[f"{name}.bias"]


def np_ff(p, name, x):
    return np_linear(p, f"{name}.fc2", np.maximum(np_linear(p, f"{name}.fc1", x), 0.0))


def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_attention(p, name, x, heads, fused=True):
    if fused:
        ws = np.split(p[f"{name}.qkv.w"], 3, axis=1)
        bs = np.split(p[f"{name}.qkv.b"], 3)
        q, k, v = (x @ w + b for w, b in zip(ws, bs))
    else:
        q, k, v = (np_linear(p, f"{name}.{n}", x) for n in ("wq", "wk", "wv"))
    dh = x.shape[-1] // heads
    # one head at a time, by slicing columns: independent of the layers' reshape/transpose
    outs = []
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        scores = q[..., cols] @ k[..., cols].transpose(0, 2, 1) / math.sqrt(dh)
        outs.append(np_softmax(scores) @ v[..., cols])
    return np_linear(p, f"{name}.out", np.concatenate(outs, axis=-1))


def np_encoder(p, name, x, heads, residual, norm):
    blocks = [(lambda y: np_attention(p, f"{name}.attn", y, heads), f"{name}.ln1"),
              (lambda y: np_ff(p, f"{name}.ff", y), f"{name}.ln2")]
    for block, ln in blocks:
        if norm == "pre":
            y = block(np_layer_norm(p, ln, x))
            x = x + y if residual else y
        else:
            y = block(x)
            x = np_layer_norm(p, ln, x + y if residual else y)
    return x


def np_patches(img, p):
    """Patches in row-major order, each flattened row-major, by explicit slicing."""
    n, h, w = img.shape
    return np.stack([img[:, i:i + p, j:j + p].reshape(n, p * p)
                     for i in range(0, h, p) for j in range(0, w, p)], axis=1)


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trace_example(name: str):
    with tc.graph() as b:
        train = load_example(name).model()
    return train, b


def param_count(builder) -> int:
    return sum(int(np.prod(p.type.shape)) for p in builder.params.values())


# --------------------------------------------------------------------------- forward against NumPy


def test_linear_and_layer_norm_and_feed_forward_match_numpy():
    rng = np.random.default_rng(0)
    with tc.graph() as b:
        x = tc.input("x", ("B", T, 6), dtype="f64")
        y_lin = Linear("lin", 6, 4, dtype="f64")(x)
        y_ln = LayerNorm("ln", 6, dtype="f64")(x)
        y_ff = FeedForward("ff", 6, 8, dtype="f64")(x)
        y_nob = Linear("nob", 6, 2, bias=False, dtype="f64")(x)
    assert "nob.b" not in b.params and y_nob.shape == ("B", T, 2)
    p = random_params(b, rng)
    xv = rng.standard_normal((B, T, 6))
    got = run([y_lin, y_ln, y_ff, y_nob], {x: xv}, p)
    np.testing.assert_allclose(got[0], np_linear(p, "lin", xv), rtol=1e-12)
    np.testing.assert_allclose(got[1], np_layer_norm(p, "ln", xv), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[2], np_ff(p, "ff", xv), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[3], xv @ p["nob.w"], rtol=1e-12)


def test_linear_init_follows_torch():
    from tinyc.runtime.init import init_params

    with tc.graph() as b:
        Linear("fc", 50, 40)(tc.input("x", ("B", 50)))
    values = init_params(b.graph(), seed=0)
    bound = 1 / math.sqrt(50)
    for name in ("fc.w", "fc.b"):
        v = values[name]
        assert v.dtype == np.float32 and np.abs(v).max() <= bound and np.abs(v).max() > 0.8 * bound


@pytest.mark.parametrize("heads, fused", [(1, True), (1, False), (2, True), (4, False)])
def test_attention_matches_numpy(heads, fused):
    rng = np.random.default_rng(heads)
    d = 8
    with tc.graph() as b:
        x = tc.input("x", ("B", T, d), dtype="f64")
        layer = (SingleHeadAttention("att", d, fused_qkv=fused, dtype="f64") if heads == 1
                 else MultiHeadAttention("att", d, heads, fused_qkv=fused, dtype="f64"))
        y = layer(x)
    assert y.shape == ("B", T, d)
    p = random_params(b, rng, scale=0.5)
    xv = rng.standard_normal((B, T, d))
    np.testing.assert_allclose(run(y, {x: xv}, p), np_attention(p, "att", xv, heads, fused), rtol=1e-10, atol=1e-12)


def test_attention_in_f32_matches_numpy():
    rng = np.random.default_rng(7)
    with tc.graph() as b:
        x = tc.input("x", ("B", T, 8))
        y = MultiHeadAttention("att", 8, 2)(x)
    p = {k: v.astype(np.float32) for k, v in random_params(b, rng).items()}
    xv = rng.standard_normal((B, T, 8)).astype(np.float32)
    got = run(y, {x: xv}, p)
    assert got.dtype == np.float32
    want = np_attention({k: v.astype(np.float64) for k, v in p.items()}, "att", xv.astype(np.float64), 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_encoder_layer_matches_numpy(residual, norm):
    rng = np.random.default_rng(1)
    with tc.graph() as b:
        x = tc.input("x", ("B", T, 8), dtype="f64")
        y = EncoderLayer("enc0", 8, heads=2, d_ff=12, residual=residual, norm=norm, dtype="f64")(x)
    p = random_params(b, rng)
    xv = rng.standard_normal((B, T, 8))
    want = np_encoder(p, "enc0", xv, 2, residual, norm)
    np.testing.assert_allclose(run(y, {x: xv}, p), want, rtol=1e-9, atol=1e-11)


def test_patch_tokens_match_numpy():
    rng = np.random.default_rng(2)
    with tc.graph():
        image = tc.input("image", ("B", 28, 28), dtype="f64")
        tokens = TransformerClassifier(tokens="patches", patch=7, d_model=8, heads=2, layers=1, d_ff=8,
                                       dtype="f64").to_tokens(image)
    assert tokens.shape == ("B", 16, 49)
    img = rng.standard_normal((B, 28, 28))
    got = tc.function(tokens, [image])(img)
    np.testing.assert_array_equal(got, np_patches(img, 7))
    np.testing.assert_array_equal(got, img.reshape(B, 4, 7, 4, 7).transpose(0, 1, 3, 2, 4).reshape(B, 16, 49))


@pytest.mark.parametrize("tokens", ["rows", "patches"])
def test_transformer_classifier_matches_numpy(tokens):
    rng = np.random.default_rng(3)
    cfg = {"d_model": 8, "heads": 2, "layers": 2, "d_ff": 12, "residual": True, "norm": "pre",
           "pos_embedding": True, "final_norm": True, "classes": 10}
    with tc.graph() as b:
        image = tc.input("image", ("B", 28, 28), dtype="f64")
        logits = TransformerClassifier("vit", tokens=tokens, patch=7, dtype="f64", **cfg)(image)
    assert logits.shape == ("B", 10)
    p = random_params(b, rng)
    img = rng.standard_normal((B, 28, 28))
    x = img if tokens == "rows" else np_patches(img, 7)
    x = np_linear(p, "vit.embed", x) + p["vit.pos"]
    for i in range(2):
        x = np_encoder(p, f"vit.enc{i}", x, 2, True, "pre")
    want = np_linear(p, "vit.head", np_layer_norm(p, "vit.ln_f", x).mean(axis=1))
    np.testing.assert_allclose(run(logits, {image: img}, p), want, rtol=1e-9, atol=1e-11)


def test_losses_and_accuracy_match_numpy():
    rng = np.random.default_rng(4)
    with tc.graph():
        logits = tc.input("logits", ("B", 10))
        labels = tc.input("labels", ("B",), dtype="i64")
        outs = [softmax_cross_entropy(logits, labels), softmax_loss(logits, labels), accuracy(logits, labels)]
    z = rng.standard_normal((8, 10)).astype(np.float32) * 3
    y = rng.integers(0, 10, 8)
    y[:3] = z[:3].argmax(-1)  # some right, some (probably) wrong
    got = tc.function(outs, [logits, labels])(z, y)
    want_loss = -np.log(np_softmax(z.astype(np.float64))[np.arange(8), y]).mean()
    assert all(v.shape == () for v in got) and got[2].dtype == np.float32
    np.testing.assert_allclose(got[0], want_loss, rtol=1e-5)
    np.testing.assert_allclose(got[1], want_loss, rtol=1e-5)
    assert got[2] == pytest.approx((z.argmax(-1) == y).mean())


# --------------------------------------------------------------------------- gradients


def _grad_case(build, rng, input_shape):
    """(loss, [x, r, *params], values) for a layer y = build(x) on an f64 input, loss = sum(y * r)
    with a random r (a plain sum would hide errors, e.g. sum(softmax(x)) is constant)."""

    def concrete(shape):
        return [B if d == "B" else d for d in shape]

    with tc.graph() as b:
        x = tc.input("x", input_shape, dtype="f64")
        y = build(x)
        r = tc.input("r", y.shape, dtype="f64")
        loss = (y * r).sum()
    p = random_params(b, rng)
    values = [rng.standard_normal(concrete(input_shape)), rng.standard_normal(concrete(y.shape)), *p.values()]
    return loss, [x, r] + [b.tensor(n) for n in p], values


GRAD_CASES = {
    "linear": (lambda x: Linear("lin", 4, 3, dtype="f64")(x), ("B", 4)),
    "layer_norm": (lambda x: LayerNorm("ln", 5, dtype="f64")(x), ("B", T, 5)),
    "multi_head_attention": (lambda x: MultiHeadAttention("att", 4, 2, dtype="f64")(x), ("B", T, 4)),
    "classifier": (lambda x: TransformerClassifier(tokens="patches", image=(4, 4), patch=2, d_model=4, heads=2,
                                                   layers=1, d_ff=6, classes=3, dtype="f64")(x), ("B", 4, 4)),
}


@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_layer_gradients_match_finite_differences(case):
    build, shape = GRAD_CASES[case]
    loss, wrt, values = _grad_case(build, np.random.default_rng(5), shape)
    check_grad(loss, wrt, values)


# --------------------------------------------------------------------------- names


def test_parameter_names_are_hierarchical_and_unique():
    with tc.graph() as b:
        EncoderLayer("enc0", 8, heads=2, d_ff=16, fused_qkv=False)(tc.input("x", ("B", T, 8)))
    assert set(b.params) == {
        f"enc0.{p}" for p in ("attn.wq.w", "attn.wq.b", "attn.wk.w", "attn.wk.b", "attn.wv.w", "attn.wv.b",
                              "attn.out.w", "attn.out.b", "ln1.gain", "ln1.bias", "ff.fc1.w", "ff.fc1.b",
                              "ff.fc2.w", "ff.fc2.b", "ln2.gain", "ln2.bias")}
    with tc.graph():
        Linear("fc", 2, 2)
        with pytest.raises(tc.IRError, match="defined twice"):
            Linear("fc", 2, 2)
    with tc.graph() as b, tc.scope("net"):
        Linear("fc", 2, 2)
    assert set(b.params) == {"net.fc.w", "net.fc.b"}


def test_bad_configurations_are_clear_errors():
    with tc.graph():
        with pytest.raises(tc.ShapeError, match="heads"):
            MultiHeadAttention("att", 10, 4)
        with pytest.raises(tc.IRError, match="norm"):
            EncoderLayer("enc", 8, 2, 8, norm="middle")
        with pytest.raises(tc.ShapeError, match="patches"):
            TransformerClassifier(tokens="patches", patch=5)


# --------------------------------------------------------------------------- examples


def _linear_params(d_in, d_out):
    return d_in * d_out + d_out


def _block_params(d, d_ff):
    attn = _linear_params(d, 3 * d) + _linear_params(d, d)
    return attn + 2 * (2 * d) + _linear_params(d, d_ff) + _linear_params(d_ff, d)


EXPECTED = {
    "mlp_mnist": _linear_params(784, 128) + _linear_params(128, 10),
    "seed_transformer": _linear_params(28, 128) + _block_params(128, 128) + _linear_params(128, 10),
    "vit_mnist": (_linear_params(49, 64) + 16 * 64 + 2 * _block_params(64, 256) + 2 * 64
                  + _linear_params(64, 10)),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_example_traces_with_the_declared_interface(name):
    train, b = trace_example(name)
    assert isinstance(train, tc.Train)
    g = b.graph({"loss": train.loss, **train.outputs})
    assert {i.name: i.type for i in g.inputs} == {
        "image": tc.TensorType("f32", ("B", 28, 28)), "label": tc.TensorType("i64", ("B",))}
    assert train.loss.type == tc.TensorType("f32", ())
    assert set(train.outputs) == {"accuracy", "logits"}
    assert train.outputs["accuracy"].type == tc.TensorType("f32", ())
    assert train.outputs["logits"].type == tc.TensorType("f32", ("B", 10))
    assert param_count(b) == EXPECTED[name]
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*", n) for n in b.params)
    assert train.epochs == 3


def test_example_defaults():
    seed, _ = trace_example("seed_transformer")
    assert isinstance(seed.optimizer, tc.optim.SGD) and seed.optimizer.momentum == 0.0
    assert seed.defaults()["lr"] == 0.02 and seed.batch_size == 50

    vit, b = trace_example("vit_mnist")
    assert isinstance(vit.optimizer, tc.optim.Adam)
    d = vit.defaults()
    assert (d["batch_size"], d["lr"], d["schedule"]) == (64, 3e-3, "cosine") and 0 < d["warmup"] <= 500
    assert b.params["embed.w"].type.shape == (49, 64) and b.params["pos"].type.shape == (16, 64)
    assert {n.split(".")[0] for n in b.params if n.startswith("enc")} == {"enc0", "enc1"}
    reshapes = [n.attrs["shape"] for n in b.graph().nodes if n.op == "reshape"]
    assert ("B", 16, 49) in map(tuple, reshapes) and ("B", 16, 4, 16) in map(tuple, reshapes)  # patches, 4 heads


@pytest.mark.parametrize("name", list(EXPECTED))
def test_example_runs_forward(name):
    train, b = trace_example(name)
    image, label = b.tensor("image"), b.tensor("label")
    rng = np.random.default_rng(6)
    img = rng.random((4, 28, 28)).astype(np.float32)
    lab = rng.integers(0, 10, 4)
    loss, acc, logits = tc.function([train.loss, train.outputs["accuracy"], train.outputs["logits"]],
                                    [image, label])(img, lab)
    assert logits.shape == (4, 10) and np.isfinite(logits).all()
    want = -np.log(np_softmax(logits.astype(np.float64))[np.arange(4), lab]).mean()
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    assert acc == pytest.approx((logits.argmax(-1) == lab).mean())
