"""``jaxgc.export`` and ``jaxgc export``: serialized generators with a symbolic batch, low-bit.

The horse->zebra generator (GAN Compression's release, ``$JAXGC_ASSETS``; skipped, saying why,
only when ``JAXGC_ASSETS`` is unset) is exported at 64x64 for CPU, CUDA and TPU at once, then
loaded from disk and run on CPU for batches of 1 and 7 from the same artifact.

Tolerance of the output comparisons, float32: the artifact and the model evaluate the same ops on
the same float32 weights (the artifact dequantizes ``(codes - zero_point) * scale`` in the graph,
which :mod:`jaxgc.compress.storage` guarantees equals fake quantization bit for bit). The only
legitimate difference is the order in which XLA sums a convolution's products when it compiles
the two programs (constant folding, another batch size). Reordering a float32 sum of K products
moves it by at most about ``K * u * sum|products|`` (Higham, "Accuracy and Stability of Numerical
Algorithms", section 3.1; u = 2**-24 ~ 6e-8); the widest reduction here is K = 3 * 3 * 128 =
1152, i.e. ~7e-5 of the layer's summed magnitudes, and every instance norm rescales the next
layer's input to unit variance, so errors do not grow from layer to layer. The outputs are tanh
values in [-1, 1]: ``atol = 1e-4`` (about 1700 float32 ulps of 1.0) covers that bound, while a
wrong weight, a dequantization mistake or a missing activation quantizer moves outputs by more
than 1e-3 (half an 8-bit step of [-1, 1] is 4e-3). On CPU the observed difference is 0 to 1e-5.
"""

import json
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import asset_path
from jaxgc import cli
from jaxgc import compress
from jaxgc import convert
from jaxgc import export

H2Z = "cyclegan-h2z-gancompression/latest_net_G.pth"
MLP_G = "mnist-mlpgan/G--300.ckpt"
SIZE = 64
ATOL = 1e-4  # see the module docstring


@pytest.fixture(scope="module")
def h2z(assets):
  module, variables = convert.load_torch_checkpoint(str(asset_path(assets, H2Z)))
  x = np.asarray(jax.random.uniform(jax.random.key(0), (7, SIZE, SIZE, 3), minval=-1.0,
                                    maxval=1.0))
  return module, variables, x


SETTINGS = {"fp32": None, "w8": 8, "w4": 4, "w4a8": 4}


@pytest.fixture(scope="module")
def exported(h2z, tmp_path_factory):
  """Every setting exported once (cpu, cuda, tpu): ``{name: (folder, metadata, reference fn)}``."""
  module, variables, x = h2z
  root = tmp_path_factory.mktemp("exports")
  out = {}
  for name, bits in SETTINGS.items():
    tree = variables if bits is None else compress.quantize_variables(
        variables, compress.QuantConfig(bits))
    fq = compress.dequantize_variables(tree)
    act = {}
    if name.endswith("a8"):
      act = {"act_config": compress.ActQuantConfig(8),
             "calibration": compress.calibrate(module, fq, [x[:4]], compress.ActQuantConfig(8))}
      ref = jax.jit(lambda v, b, a=act: compress.apply_quantized(module, v, b, **{
          "act_config": a["act_config"], "calibration": a["calibration"]}))
    else:
      ref = jax.jit(module.apply)
    meta = export.save(module, tree, root / name, size=SIZE, **act)
    out[name] = (root / name, meta, lambda b, ref=ref, fq=fq: np.asarray(ref(fq, b)))
  return out


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_outputs_equal_the_model_for_batch_1_and_7(exported, h2z, name):
  _, _, x = h2z
  folder, meta, reference = exported[name]
  generator = export.load(folder)
  assert set(generator.platforms) == {"cpu", "cuda", "tpu"}
  assert meta["input"]["shape"] == ["batch", SIZE, SIZE, 3]
  assert meta["output"]["shape"] == ["batch", SIZE, SIZE, 3]
  for batch in (1, 7):
    y = np.asarray(generator(x[:batch]))
    assert y.shape == (batch, SIZE, SIZE, 3)
    np.testing.assert_allclose(y, reference(x[:batch]), rtol=0, atol=ATOL,
                               err_msg=f"{name}, batch {batch}")
  assert (meta["activations"] is not None) == name.endswith("a8")


def test_artifact_size_is_the_compressed_size(exported):
  """Low-bit codes stay low-bit: artifact bytes = the weights' stored bytes + a graph that does
  not depend on them (about 115 kB for every setting: three platforms, and for the CPU the
  depthwise convolutions' shifted multiply-adds beside the accelerators' grouped convolutions)."""
  weights = {n: sum(v["bytes"] for v in exported[n][1]["weights"].values()) for n in SETTINGS}
  sizes = {n: exported[n][1]["artifact_bytes"] for n in SETTINGS}
  assert sizes == {n: os.path.getsize(exported[n][0] / export.ARTIFACT_FILE) for n in SETTINGS}
  assert "int8" in exported["w8"][1]["weights"] and "int4 packed" in exported["w4"][1]["weights"]
  for n in ("fp32", "w8", "w4"):
    assert 0 < sizes[n] - weights[n] < 150_000, (n, sizes[n], weights[n])
  assert sizes["w8"] < 0.35 * sizes["fp32"]   # int8 codes: ~1/4, plus scales and the graph
  assert sizes["w4"] < 0.23 * sizes["fp32"]   # packed int4: ~1/8, plus scales and the graph


def test_load_runs_without_model_code(exported, h2z, tmp_path):
  """A fresh Python that imports only jax and flatbuffers (jaxgc and flax blocked) runs it."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  folder = exported["w4"][0]
  _, _, x = h2z
  np.save(tmp_path / "x.npy", x[:2])
  script = textwrap.dedent(f"""\
      import sys
      class Block:
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] in ("jaxgc", "flax", "torch"):
            raise ImportError("blocked: " + name)
      sys.meta_path.insert(0, Block())
      import jax, numpy as np
      exp = jax.export.deserialize(bytearray(open({str(folder / export.ARTIFACT_FILE)!r}, "rb").read()))
      np.save({str(tmp_path / "y.npy")!r}, np.asarray(exp.call(np.load({str(tmp_path / "x.npy")!r}))))
      """)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  np.testing.assert_allclose(np.load(tmp_path / "y.npy"), exported["w4"][2](x[:2]), rtol=0,
                             atol=ATOL)


def test_nnx_model_and_stablehlo_dump(h2z, tmp_path):
  module, variables, x = h2z
  from flax import nnx  # pylint: disable=import-outside-toplevel
  graphdef, state = nnx.split(convert.to_nnx(module, variables))
  state = compress.quantize_variables(state, compress.QuantConfig(8))
  meta = export.save(nnx.merge(graphdef, compress.dequantize_variables(state)), state,
                     tmp_path / "e", size=SIZE, platforms="cpu", stablehlo=True)
  assert meta["platforms"] == ["cpu"] and "int8" in meta["weights"]
  text = (tmp_path / "e" / export.STABLEHLO_FILE).read_text()
  assert "stablehlo.convolution" in text and "tensor<3x3x1x128xi8>" in text
  y = export.load(tmp_path / "e")(x[:2])
  ref = module.apply(compress.fake_quantize(variables, compress.QuantConfig(8)), x[:2])
  np.testing.assert_allclose(y, ref, rtol=0, atol=ATOL)


def test_output_folder_ownership(h2z, tmp_path):
  module, variables, _ = h2z
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="notes.txt"):
    export.save(module, variables, foreign, size=8, platforms="cpu")
  assert os.listdir(foreign) == ["notes.txt"]
  afile = tmp_path / "afile"
  afile.write_text("x")
  with pytest.raises(FileExistsError, match="not a folder"):
    export.save(module, variables, afile, size=8, platforms="cpu")
  out = tmp_path / "out"
  export.save(module, variables, out, size=8, platforms="cpu", stablehlo=True)
  export.save(module, variables, out, size=8, platforms="cpu")  # replaces its own export
  assert sorted(os.listdir(out)) == sorted([export.ARTIFACT_FILE, export.META_FILE,
                                            "jaxgc-manifest.json"])
  assert sorted(os.listdir(tmp_path)) == ["afile", "mine", "out"]  # no temporary folder left


def test_bad_input_is_one_clear_error(h2z, tmp_path):
  module, variables, x = h2z
  with pytest.raises(ValueError, match="unknown platform 'gpu'"):
    export.save(module, variables, tmp_path / "a", platforms=("cpu", "gpu"))
  with pytest.raises(ValueError, match="size must be an int >= 4 divisible by 4, got 30"):
    export.save(module, variables, tmp_path / "a", size=30)
  with pytest.raises(ValueError, match="needs a calibration"):
    export.save(module, variables, tmp_path / "a", act_config=compress.ActQuantConfig(8))
  assert not (tmp_path / "a").exists()
  with pytest.raises(FileNotFoundError, match="no export.json"):
    export.load(tmp_path)
  out = tmp_path / "e"
  export.save(module, variables, out, size=8, platforms="cpu")
  generator = export.load(out)
  with pytest.raises(ValueError, match=r"input has shape \(2, 64, 64, 3\), the artifact takes "
                     r"\[batch, 8, 8, 3\]"):
    generator(x[:2])
  blob = (out / export.ARTIFACT_FILE).read_bytes()
  (out / export.ARTIFACT_FILE).write_bytes(blob[: len(blob) // 2])
  with pytest.raises(ValueError, match="truncated or corrupt"):
    export.load(out)


def test_cli_exports_a_compress_checkpoint_with_activations(assets, tmp_path, capsys):
  """``jaxgc compress`` (MLP generator, W4 with calibrated A8, and the W4A8 recipe) then
  ``jaxgc export`` of both checkpoints: the artifacts reproduce the checkpoints' outputs."""
  cfg = tmp_path / "cfg.py"
  cfg.write_text(textwrap.dedent(f"""\
      import ml_collections
      def get_config():
        c = ml_collections.ConfigDict()
        c.checkpoint = {str(asset_path(assets, MLP_G))!r}
        c.arch = "mlp_generator"
        c.inputs = ml_collections.ConfigDict({{"num_samples": 4}})
        c.sweep = ml_collections.ConfigDict({{"weight_bits": (4,), "granularities":
            ("per_channel",), "clip": (False,), "recipes": ("w4a8",)}})
        c.activations = ml_collections.ConfigDict({{"bits": 8}})
        return c
      """))
  wd = tmp_path / "wd"
  assert cli.main(["compress", "--config", str(cfg), "--workdir", str(wd), "--no-progress"]) == 0
  module, fp32 = convert.load_torch_checkpoint(asset_path(assets, MLP_G))
  z = np.asarray(jax.random.normal(jax.random.key(3), (7, module.z_dim)))
  for setting in ("w4_per_channel_a8", "recipe_w4a8"):
    ckdir = wd / "checkpoints" / setting
    spec = json.loads((ckdir / "spec.json").read_text())
    assert spec["activations"]["bits"] == 8
    out = tmp_path / f"export_{setting}"
    capsys.readouterr()
    assert cli.main(["export", str(ckdir), str(out), "--platforms", "cpu,tpu"]) == 0
    assert str(out) in capsys.readouterr().out
    meta = json.loads((out / export.META_FILE).read_text())
    assert meta["activations"]["calibrated_layers"] == 3 and "int4 packed" in meta["weights"]
    _, stored, act = export.load_checkpoint(ckdir)
    rules = act["act_rules"]
    ref = compress.apply_quantized(module, compress.dequantize_variables(stored), z,
                                   act["act_config"], act["calibration"], rules=rules)
    generator = export.load(out)
    for batch in (1, 7):
      np.testing.assert_allclose(generator(z[:batch]), ref[:batch], rtol=0, atol=ATOL)
    # The activation quantizers are in the artifact: without them the outputs differ.
    plain = module.apply(compress.dequantize_variables(stored), z)
    assert float(jnp.max(jnp.abs(plain - ref))) > 1e-3
  # A non-empty folder jaxgc did not write is refused in one line, before any work.
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "a.txt").write_text("x")
  assert cli.main(["export", str(wd / "checkpoints" / "fp32"), str(tmp_path / "taken")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("jaxgc: error: output folder") and "a.txt" in err and "\n" not in err


def test_any_linen_module_with_input_shape(tmp_path):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  dense = nn.Dense(3)
  x = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
  variables = dense.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="Dense is not a jaxgc zoo model: give input_shape"):
    export.save(dense, variables, tmp_path / "a", platforms="cpu")
  meta = export.save(dense, variables, tmp_path / "a", input_shape=(5,), platforms="cpu")
  assert meta["model"] == {"class": "Dense"} and meta["input"]["shape"] == ["batch", 5]
  np.testing.assert_allclose(export.load(tmp_path / "a")(x), dense.apply(variables, x),
                             rtol=0, atol=1e-6)
