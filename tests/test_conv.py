"""The CPU convolution paths ("cpu": XLA only; "native": with the FFI kernels of
research/models/native/cpu_kernels.cc) equal lax.conv_general_dilated: values, input gradients, kernel
gradients.

One case per kernel size / stride / padding / dilation / group count the model zoo uses; channel
counts above 16 where XLA:CPU would send the reference to YNNPACK, so the two sides take
different kernels.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from research.models import cpu_dispatch, native_cpu
from research.models.conv import Conv, conv2d

# The CPU paths; on GPU/TPU every layer is plain XLA (test_other_backends_never_import_the_native_path).
pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU convolution paths")

# name: (input [N, H, W, C_in], (kh, kw), C_out, strides, padding, dilation, groups)
CASES = {
    "lenet_c1_5x5_valid": ((2, 14, 14, 1), (5, 5), 6, 1, "VALID", 1, 1),
    "lenet_c1_5x5_p2": ((2, 12, 12, 1), (5, 5), 6, 1, 2, 1, 1),
    "lenet_c3_5x5_valid": ((2, 9, 9, 6), (5, 5), 16, 1, "VALID", 1, 1),
    "alexnet_11x11_s4_p2": ((2, 27, 27, 3), (11, 11), 20, 4, 2, 1, 1),
    "alexnet_5x5_p2": ((2, 9, 9, 20), (5, 5), 24, 1, 2, 1, 1),
    "3x3_p1_s1": ((2, 10, 10, 20), (3, 3), 24, 1, 1, 1, 1),
    "3x3_p1_s2": ((2, 10, 10, 20), (3, 3), 24, 2, 1, 1, 1),
    "3x3_same_s2_odd_input": ((2, 9, 11, 20), (3, 3), 24, 2, "SAME", 1, 1),
    "1x1_s1": ((2, 6, 6, 20), (1, 1), 24, 1, 0, 1, 1),
    "1x1_s2": ((2, 7, 7, 20), (1, 1), 24, 2, "VALID", 1, 1),
    "1x1_groups4_padded": ((2, 5, 5, 20), (1, 1), 24, 1, 1, 1, 4),
    "1x1_s2_padded": ((2, 7, 7, 20), (1, 1), 24, 2, 1, 1, 1),
    "7x7_s2_p3": ((2, 16, 15, 3), (7, 7), 20, 2, 3, 1, 1),
    "3x3_rate2": ((2, 12, 12, 20), (3, 3), 20, 1, 2, 2, 1),
    "3x3_rate4": ((2, 10, 10, 20), (3, 3), 20, 1, 4, 4, 1),  # dilated ResNet layer4 at output stride 8
    "3x3_rate6": ((2, 16, 16, 20), (3, 3), 20, 1, 6, 6, 1),
    "3x3_rate2_s2": ((2, 12, 12, 20), (3, 3), 20, 2, "SAME", 2, 1),
    "3x3_groups2": ((2, 8, 8, 20), (3, 3), 24, 1, 1, 1, 2),
    "3x3_depthwise": ((2, 8, 8, 20), (3, 3), 20, 1, 1, 1, 20),
    "3x5_asymmetric_pad": ((2, 9, 7, 20), (3, 5), 24, (1, 2), ((1, 0), (2, 3)), 1, 1),
    "3x3_negative_pad": ((2, 9, 8, 20), (3, 3), 24, 1, ((-1, 2), (0, -1)), 1, 1),
    "3x3_16_channels": ((2, 8, 8, 16), (3, 3), 16, 1, 1, 1, 1),
    # 4 channel vectors (AVX-512) on 8-pixel rows: blocks of 3 vectors and of 1, the last partial.
    "3x3_8x8_40_to_52_channels": ((2, 8, 8, 40), (3, 3), 52, 1, 1, 1, 1),
    "3x3_6x6_100_to_120_channels": ((2, 6, 6, 100), (3, 3), 120, 1, 1, 1, 1),
    # Wider than the native forward kernel's limit: stride-1 input gradients as the row-dilated
    # convolution of dy with the native kernel's flip of the kernel ("row_dilated_flipped").
    "3x3_4x4_136_channels": ((2, 4, 4, 136), (3, 3), 136, 1, 1, 1, 1),
    "3x3_rate2_136_to_130_pads": ((2, 7, 6, 136), (3, 3), 130, 1, ((2, 1), (0, 3)), 2, 1),
    "3x3_12_channels_s2_batch_33": ((33, 7, 7, 12), (3, 3), 16, 2, "SAME", 1, 1),
    # Strided input gradients too wide for the scatter: one stride-1 convolution of dy per output
    # phase ("native_phases"; "row_dilated_phases" past the native forward limit): odd sizes,
    # stride 3 with uneven padding, a kernel smaller than the stride (phases with no taps).
    "3x3_s2_odd_48_to_40_phases": ((2, 11, 9, 48), (3, 3), 40, 2, 1, 1, 1),
    "5x4_s3x2_pads_phases": ((2, 13, 11, 40), (5, 4), 24, (3, 2), ((2, 0), (1, 3)), 1, 1),
    "2x2_s3_phases_without_taps": ((2, 10, 9, 64), (2, 2), 24, 3, ((0, 1), (1, 0)), 1, 1),
    "3x3_s2_136_channels_phases": ((2, 7, 8, 136), (3, 3), 136, 2, "SAME", 1, 1),
    "3x3_groups2_batch_20": ((20, 5, 5, 16), (3, 3), 16, 1, 1, 1, 2),
    "gray_3x3_s2_rate2": ((2, 11, 10, 1), (3, 3), 20, 2, "SAME", 2, 1),
    "few_channels_5x3_s2_rate2_pads": ((2, 13, 12, 6), (5, 3), 20, (2, 1), ((2, 1), (-1, 3)), (1, 2), 1),
    # Kernel gradients whose kernel rows merge into one register block (one channel vector, short
    # rows): 7 rows of 7 taps, dilated rows, strided; and 2 channels x 3 taps to 16 channels.
    "gray_7x7_s2_row_rate2": ((2, 23, 21, 1), (7, 7), 8, 2, 3, (2, 1), 1),
    "two_channels_3x3_to_16": ((3, 9, 10, 2), (3, 3), 16, 1, 1, 1, 1),
    # One input channel, forward passes with pixels in the vector lanes (UsesPixelLanes): rows of
    # 3 vectors of 16 (blocks of 2 + 1 partial), 10 output channels in blocks of 8 + 2, strided
    # and dilated rows; and 20 channels (8 + 8 + 4) on LeNet-5's 28-pixel rows.
    "gray_3x5_45_wide_rows_to_10": ((2, 11, 45, 1), (3, 5), 10, (2, 1), ((1, 2), (2, 2)), (2, 1), 1),
    "gray_5x5_28_wide_to_20": ((2, 28, 28, 1), (5, 5), 20, 1, 2, 1, 1),
    # Kernel gradients in pixel lanes with the AVX-512 build (native_cpu.kernel_grad_in_pixel_lanes;
    # some cases above take them too): LeNet-5's first layer (28-pixel rows: a vector and a masked
    # one, 6 channels), and rows of 7 taps (the most) to 5 channels in blocks of 3 + 2.
    "lenet_c1_28_wide_kernel_grad_lanes": ((3, 32, 32, 1), (5, 5), 6, 1, "VALID", 1, 1),
    "gray_7x7_34_wide_to_5_kernel_grad_lanes": ((2, 12, 34, 1), (7, 7), 5, 1, 3, 1, 1),
}


# The reference first; the native kernels are built on first use and must be available here.
IMPLS = ("xla", "cpu", "native")


def test_native_kernels_available():
  assert native_cpu.available(), native_cpu.unavailable_reason()


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def _lax_padding(padding):
  """The padding argument of lax.conv_general_dilated for a CASES padding."""
  if isinstance(padding, str):
    return padding
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  return padding


def _conv_and_grads(impl: str, x: jnp.ndarray, kernel: jnp.ndarray, dy: jnp.ndarray, strides, padding,
                    dilation, groups) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """(y [N, H', W', C_out], dL/dx [N, H, W, C_in], dL/dkernel [kh, kw, C_in/groups, C_out]) for L = sum(y * dy)."""
  y, vjp = jax.vjp(lambda x_, k_: conv2d(x_, k_, strides, padding, dilation, groups, impl), x, kernel)
  return (y, *vjp(dy))


def _random_inputs(name: str, dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """x [N, H, W, C_in], kernel [kh, kw, C_in/groups, C_out] and a cotangent dy [N, H', W', C_out] for CASES[name]."""
  in_shape, (kh, kw), cout, strides, padding, dilation, groups = CASES[name]
  rng = np.random.default_rng(0)
  x = rng.standard_normal(in_shape).astype(dtype)
  kernel = rng.standard_normal((kh, kw, in_shape[-1] // groups, cout)).astype(dtype)
  out = jax.eval_shape(lambda x_, k_: conv2d(x_, k_, strides, padding, dilation, groups, "xla"), x, kernel)
  return x, kernel, rng.standard_normal(out.shape).astype(dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_cpu_path_matches_lax_conv(name: str):
  _, _, _, strides, padding, dilation, groups = CASES[name]

  def run(x, kernel, dy):
    ref = lax.conv_general_dilated(x, kernel, _pair(strides), _lax_padding(padding), rhs_dilation=_pair(dilation),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return ref, [_conv_and_grads(impl, x, kernel, dy, strides, padding, dilation, groups) for impl in IMPLS]

  ref, (expected, *actuals) = jax.device_get(jax.jit(run)(*_random_inputs(name, np.float32)))
  np.testing.assert_allclose(expected[0], ref, rtol=1e-6, atol=1e-6)
  for impl, actual in zip(IMPLS[1:], actuals):
    for what, a, e in zip(("output", "input gradient", "kernel gradient"), actual, expected):
      assert a.shape == e.shape and a.dtype == e.dtype, (impl, what)
      np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5 * np.abs(e).max(), err_msg=f"{impl}: {what}")


@pytest.mark.parametrize("name", ["lenet_c1_5x5_valid", "lenet_c3_5x5_valid", "3x3_p1_s2", "1x1_s2", "3x3_p1_s1",
                                  "3x3_s2_odd_48_to_40_phases", "3x3_s2_136_channels_phases"])
def test_bf16_cpu_paths_match_f32_reference(name: str):
  """bf16 in, bf16 out, f32 accumulation: as close to the f32 result as XLA's own bf16 convolution."""
  _, _, _, strides, padding, dilation, groups = CASES[name]

  def run(*args):
    return [_conv_and_grads(impl, *inputs, strides, padding, dilation, groups)
            for impl, inputs in (("xla", [a.astype(jnp.float32) for a in args]), ("xla", args), ("cpu", args),
                                 ("native", args))]

  inputs = [jnp.asarray(a, jnp.bfloat16) for a in _random_inputs(name, np.float32)]
  reference, xla, *actuals = jax.device_get(jax.jit(run)(*inputs))
  for actual in actuals:
    for a, b, r in zip(actual, xla, reference):
      assert a.dtype == jnp.bfloat16
      error, xla_error = np.abs(a.astype(np.float32) - r).max(), np.abs(b.astype(np.float32) - r).max()
      assert error <= max(1.5 * xla_error, 0.01 * np.abs(r).max())


def test_cpu_plan_avoids_the_plain_convolution_above_16_channels():
  """The XLA-only CPU path's rules: row-dilated forms (lhs_dilation (2, 1), which XLA:CPU runs with
  Eigen's multi-threaded convolution) above 16 channels, plain convolutions of 16-image chunks
  for the kernel gradient at <= 16 channels."""
  x, kernel = jnp.ones((4, 8, 8, 32)), jnp.ones((3, 3, 32, 32))
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x_, k_: jnp.sum(conv2d(x_, k_, 1, 1, impl="cpu")),
                                      argnums=(0, 1)))(x, kernel))
  assert jaxpr.count("lhs_dilation=(2, 1)") == 3  # forward, input gradient, kernel gradient
  assert cpu_dispatch.conv_plan((40, 8, 8, 16), (3, 3, 16, 16), (1, 1), (1, 1), 1, "cpu") == \
      cpu_dispatch.ConvPlan("xla", "xla", "chunked", kept_input="matmul")
  assert cpu_dispatch.conv_plan((4, 8, 8, 1), (5, 5, 1, 6), (1, 1), (1, 1), 1, "cpu").forward == "tap_sum"
  assert cpu_dispatch.conv_plan((4, 8, 8, 32), (1, 1, 32, 64), (2, 2), (1, 1), 1, "cpu") == \
      cpu_dispatch.ConvPlan("matmul", "matmul", "matmul")


def test_native_pointwise_plan_takes_the_native_kernel_gradient():
  """1x1 layers: matmul forward and input gradient; the kernel gradient on the native kernel (it
  reads x and dy as stored, where the matmul's transposes recompute dy's elementwise chain) up to
  1024 channels (256 for the AVX2 build), the matmul's beyond and for grouped layers."""
  plan = lambda cin, cout, groups=1: cpu_dispatch.conv_plan((4, 8, 8, cin), (1, 1, cin // groups, cout), (2, 2),
                                                            (1, 1), groups, "native")
  widest = 1024 if native_cpu.lanes() >= 16 else 256
  assert plan(32, 64) == cpu_dispatch.ConvPlan("matmul", "matmul", "native")
  assert plan(widest // 4, widest) == cpu_dispatch.ConvPlan("matmul", "matmul", "native")
  assert plan(widest, 2 * widest) == cpu_dispatch.ConvPlan("matmul", "matmul", "matmul")
  assert plan(32, 64, groups=2) == cpu_dispatch.ConvPlan("matmul", "matmul", "matmul")
  x, kernel = jnp.ones((4, 8, 8, 32)), jnp.ones((1, 1, 32, 64))
  loss = lambda x_, k_: jnp.sum(conv2d(x_, k_, 2, 0, impl="native") ** 2)
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile().as_text()
  assert hlo.count('custom_call_target="research_conv_kernel_grad"') == 1
  assert "convolution(" not in hlo


def test_native_plan_stores_the_input_of_an_xla_kernel_gradient():
  """A layer too wide for the native kernel gradient keeps its input for XLA's by the native store
  (an FFI identity: no identity matmul), with the same values and gradients as XLA's convolution."""
  widest_grad = 256 if native_cpu.lanes() >= 16 else 128
  cin = 2 * widest_grad
  assert cpu_dispatch.conv_plan((2, 4, 4, cin), (3, 3, cin, 8), (1, 1), (1, 1), 1, "native").kept_input == "store"
  assert cpu_dispatch.conv_plan((2, 4, 4, cin), (3, 3, cin, 8), (1, 1), (1, 1), 1, "cpu").kept_input == "matmul"
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 4, 4, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, cin, 8)), jnp.float32)
  grads = lambda impl: jax.grad(lambda x_, k_: jnp.sum(jnp.sin(conv2d(jnp.tanh(x_), k_, 1, 1, impl=impl))),
                                argnums=(0, 1))
  hlo = jax.jit(grads("native")).lower(x, kernel).compile().as_text()
  assert 'custom_call_target="research_store"' in hlo
  assert "dot(" not in hlo
  for a, e in zip(jax.jit(grads("native"))(x, kernel), jax.jit(grads("xla"))(x, kernel)):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * float(jnp.abs(e).max()))


def test_native_strided_input_gradient_runs_by_phases():
  """Speed guard: a strided layer too wide for the scatter computes its input gradient as stride-1
  convolutions of dy, one per output phase, on the native forward kernel (or Eigen's row-dilated
  convolution past its limit): no transposed convolution that dilates dy by the strides."""
  widest = 128 if native_cpu.lanes() >= 16 else 32
  plan = lambda c: cpu_dispatch.conv_plan((4, 8, 8, c), (3, 3, c, c), (2, 2), (1, 1), 1, "native")
  assert (plan(24).input_grad, plan(2 * widest).input_grad) == ("native_phases", "row_dilated_phases")
  x, kernel = jnp.ones((4, 8, 8, 24)), jnp.ones((3, 3, 24, 24))
  loss = lambda x_, k_: jnp.sum(conv2d(x_, k_, 2, 1, impl="native") ** 2)
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile().as_text()
  assert "convolution(" not in hlo and "lhs_dilate" not in hlo
  # The forward pass and the four phases (2x2, 2x1, 1x2 and 1x1 taps of the 3x3 kernel).
  assert hlo.count('custom_call_target="research_conv_forward"') == 5


def test_native_path_runs_no_xla_convolution():
  """Speed guard: with the native kernels, a stride-1 3x3 layer's forward pass and both gradients are
  FFI calls; XLA computes no convolution."""
  x, kernel = jnp.ones((4, 8, 8, 32)), jnp.ones((3, 3, 32, 32))
  loss = lambda x_, k_: jnp.sum(conv2d(x_, k_, 1, 1, impl="native") ** 2)
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, kernel).compile().as_text()
  assert "convolution(" not in hlo
  assert hlo.count('custom_call_target="research_conv_forward"') == 2  # forward, input gradient
  assert hlo.count('custom_call_target="research_conv_kernel_grad"') == 1


def test_flip_kernel_mirrors_taps_and_swaps_channels():
  """research_flip_kernel equals numpy's flip and transpose, for channel counts that are and are not
  whole 8 x 8 tiles (AVX tiles, scalar edges; rows past one task's 64)."""
  assert native_cpu.available(), native_cpu.unavailable_reason()
  rng = np.random.default_rng(5)
  for shape in ((3, 3, 136, 72), (5, 5, 6, 16), (1, 1, 13, 70), (3, 2, 67, 9)):
    kernel = rng.standard_normal(shape).astype(np.float32)
    flipped = np.asarray(jax.jit(native_cpu.flip_kernel)(kernel))
    np.testing.assert_array_equal(flipped, kernel[::-1, ::-1].transpose(0, 1, 3, 2))


def test_native_errors_name_the_problem(monkeypatch):
  monkeypatch.setattr(native_cpu, "_load", lambda: "no compiler")
  with pytest.raises(RuntimeError, match="native.*no compiler"):
    cpu_dispatch.resolve_impl("native")
  monkeypatch.delenv(cpu_dispatch.IMPL_ENV_VAR, raising=False)
  assert cpu_dispatch.resolve_impl() == ("cpu" if jax.default_backend() == "cpu" else "xla")


def test_impl_resolution(monkeypatch):
  monkeypatch.delenv(cpu_dispatch.IMPL_ENV_VAR, raising=False)
  assert cpu_dispatch.resolve_impl() == ("native" if jax.default_backend() == "cpu" else "xla")
  assert cpu_dispatch.resolve_impl("xla") == "xla"
  monkeypatch.setenv(cpu_dispatch.IMPL_ENV_VAR, "xla")
  assert cpu_dispatch.resolve_impl() == "xla"
  assert cpu_dispatch.resolve_impl("cpu") == "cpu"
  with cpu_dispatch.forced_impl("cpu"):  # above the environment, below the argument
    assert cpu_dispatch.resolve_impl() == "cpu"
    assert cpu_dispatch.resolve_impl("xla") == "xla"
  assert cpu_dispatch.resolve_impl() == "xla"
  x, kernel = jnp.ones((1, 6, 6, 32)), jnp.ones((3, 3, 32, 32))
  assert "lhs_dilation=(1, 1)" in str(jax.make_jaxpr(lambda a, b: conv2d(a, b))(x, kernel))
  monkeypatch.setenv(cpu_dispatch.IMPL_ENV_VAR, "cpu")
  assert "lhs_dilation=(2, 1)" in str(jax.make_jaxpr(lambda a, b: conv2d(a, b))(x, kernel))
  monkeypatch.setenv(cpu_dispatch.IMPL_ENV_VAR, "cuda")
  with pytest.raises(ValueError, match="cuda"):
    cpu_dispatch.resolve_impl()


def test_decisions_record_each_layer():
  x, kernel = jnp.ones((3, 7, 7, 8)), jnp.ones((3, 3, 8, 24))  # native forward on every build
  jax.eval_shape(lambda a, b: conv2d(a, b, 2, 1, impl="native"), x, kernel)
  record = json.loads(json.dumps(cpu_dispatch.decisions()))
  assert record["jax"] == jax.__version__ and record["rules_version"] == cpu_dispatch.RULES_VERSION
  assert record["native_build"]["vector_floats"] == native_cpu.lanes()
  plan = record["convolutions"]["conv 3x3 stride 2x2 dilation 1x1 groups 1 8->24 at 7x7 batch 3 (native)"]
  assert plan == cpu_dispatch.ConvPlan("native", "native_scatter", "native")._asdict()
  assert "native" in record["families"]


def _run_python(code: str, **env: str) -> str:
  """stdout of `code` in a fresh interpreter with this tree first on the path and `env` set."""
  root = Path(__file__).resolve().parents[1]
  environ = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_other_backends_never_import_the_native_path():
  """With a GPU/TPU backend, tracing a model's training step imports nothing of the native path."""
  out = _run_python(textwrap.dedent("""
      import sys, jax, jax.numpy as jnp
      jax.default_backend = lambda: "gpu"
      from research.models import cpu_dispatch
      from research.models.classifiers.resnet import ResNet
      model = ResNet(stage_sizes=(1, 1), width=16, num_classes=10, small_inputs=True)
      x = jnp.ones((2, 16, 16, 3))
      variables = jax.eval_shape(lambda x_: model.init(jax.random.key(0), x_, train=False), x)
      loss = lambda p, v: model.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])[0].sum()
      jax.eval_shape(lambda v: jax.grad(loss)(v["params"], v), variables)
      print(cpu_dispatch.resolve_impl(), "research.models.native_cpu" in sys.modules)
      """))
  assert out.split() == ["xla", "False"]


@pytest.mark.skipif("avx2" not in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else True,
                    reason="x86 CPU with AVX2 only")
def test_avx2_build_matches_xla():
  """The AVX2 variant (8-float vectors, 16 registers; on an AVX-512 machine built with
  -mno-avx512f) equals lax.conv_general_dilated on a few shapes: values and both gradients."""
  out = _run_python(textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from jax import lax
      from research.models import native_cpu
      from research.models.conv import conv2d
      assert native_cpu.available(), native_cpu.unavailable_reason()
      rng = np.random.default_rng(0)
      worst = 0.0
      for (n, h, c, k, size, stride) in ((2, 9, 6, 16, 5, 1), (3, 10, 20, 24, 3, 1), (2, 9, 16, 40, 3, 2),
                                         (2, 9, 24, 40, 1, 2),  # 1x1: native kernel gradient
                                         # one channel: forward passes in pixel lanes (6 channels
                                         # in one block; 10 in blocks of 6 + 4, 45-pixel rows)
                                         (2, 28, 1, 6, 5, 1), (2, 45, 1, 10, 3, 1),
                                         # kernel gradients in pixel lanes: 2 channels (28-pixel
                                         # rows: 4 vectors of 8, the last masked), 3 channels
                                         (2, 28, 1, 2, 5, 1), (2, 19, 1, 3, 7, 1),
                                         # an RGB stem past the 32-channel limit: native forward
                                         (2, 23, 3, 64, 7, 2),
                                         # strided, too wide for the scatter: input gradients by
                                         # phases, on the native forward kernel and on Eigen's
                                         (2, 9, 24, 32, 3, 2), (2, 9, 40, 24, 3, 2)):
        x = jnp.asarray(rng.standard_normal((n, h, h, c)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((size, size, c, k)), jnp.float32)
        def both(impl):
          f = lambda x_, w_: conv2d(x_, w_, stride, "SAME", impl=impl)
          y, vjp = jax.vjp(f, x, w)
          return (y, *vjp(jnp.cos(y)))
        for a, e in zip(jax.jit(lambda: both("native"))(), jax.jit(lambda: both("xla"))()):
          worst = max(worst, float(jnp.abs(a - e).max() / jnp.abs(e).max()))
      # The AVX2 build's own limits: native kernel gradients up to 128 channels (3x3) and 256 (1x1).
      from research.models import cpu_dispatch
      plan = lambda k, c, s=1: cpu_dispatch.conv_plan((8, 14, 14, c), (k, k, c, c), (s, s), (1, 1), 1, "native")
      # The first and third shapes above scatter their input gradients in chunks (20 and 18 vectors
      # a pixel; 12 fit the registers), the third with a single pixel at each row's end.
      print(native_cpu.lanes(), native_cpu.library_path().name.split("_")[2], worst,
            plan(3, 128).kernel_grad, plan(3, 256).kernel_grad, plan(1, 256).kernel_grad, plan(1, 512).kernel_grad,
            plan(5, 6).input_grad, plan(3, 16, 2).input_grad, plan(3, 32, 2).input_grad, plan(3, 40, 2).input_grad,
            cpu_dispatch.conv_plan((8, 32, 32, 3), (7, 7, 3, 64), (2, 2), (1, 1), 1, "native").forward,
            cpu_dispatch.conv_plan((8, 32, 32, 3), (3, 3, 3, 256), (1, 1), (1, 1), 1, "native").forward,
            cpu_dispatch.conv_plan((8, 32, 32, 1), (5, 5, 1, 64), (1, 1), (1, 1), 1, "native").forward)
      """), RESEARCH_NATIVE_ISA="avx2")
  lanes, variant, worst, *plans = out.split()
  assert (lanes, variant) == ("8", "avx2")
  assert float(worst) < 1e-5
  # RGB stems take the native forward up to 128 channels (YNNPACK's is single-threaded), one input
  # channel keeps the tap sum.
  assert plans == ["native", "row_dilated", "native", "matmul", "native_scatter", "native_scatter",
                   "native_phases", "row_dilated_phases", "native", "xla", "tap_sum"]


class _TwoConvs(nn.Module):
  impl: str

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.relu(Conv(24, (3, 3), strides=2, impl=self.impl, name="c1")(x))
    return Conv(8, (1, 1), use_bias=False, impl=self.impl, name="c2")(x)


_TWO_CONVS_SHAPES = {"c1": {"kernel": (3, 3, 3, 24), "bias": (24,)}, "c2": {"kernel": (1, 1, 24, 8)}}


def _two_convs_params(seed: int) -> dict:
  """Random parameters of _TwoConvs (no flax init to compile)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda shape: jnp.asarray(0.3 * rng.standard_normal(shape), jnp.float32), _TWO_CONVS_SHAPES,
                      is_leaf=lambda v: isinstance(v, tuple))


def test_module_parameters_and_training_gradients_are_the_same():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 8, 8, 3)), jnp.float32)
  for impl in IMPLS:
    abstract = jax.eval_shape(_TwoConvs(impl).init, jax.random.key(0), x)["params"]
    assert jax.tree.map(lambda a: a.shape, abstract) == _TWO_CONVS_SHAPES
  params = _two_convs_params(0)

  def loss(p, impl):
    return jnp.mean(_TwoConvs(impl).apply({"params": p}, x) ** 2)

  expected, *actuals = jax.jit(lambda p: [jax.grad(loss)(p, impl) for impl in IMPLS])(params)
  for actual in actuals:
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6), actual, expected)


@pytest.mark.parametrize("impl", ["cpu", "native"])
def test_data_parallel_gradients_match_single_device(impl: str):
  """NamedSharding-jitted and shard_map'ed gradients over all devices equal one-device gradients;
  the native kernels' custom calls keep the batch sharded (no all-gather of activations)."""
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ("data",))
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2 * len(devices), 8, 8, 3)), jnp.float32)
  params = _two_convs_params(1)

  def loss(p, batch):
    return jnp.sum(_TwoConvs(impl).apply({"params": p}, batch) ** 2)

  # Gradients for the parameters and the input (the input gradient of the stride-2 layer is the
  # native scatter kernel).
  grad = jax.grad(loss, argnums=(0, 1))
  expected = jax.jit(grad)(params, x)
  replicated, batch_sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  step = jax.jit(grad, in_shardings=(replicated, batch_sharded))
  sharded = step(params, jax.device_put(x, batch_sharded))
  if len(devices) > 1:
    assert "all-gather" not in step.lower(params, jax.device_put(x, batch_sharded)).compile().as_text()

  # Under shard_map (check_vma on) the gradient of a replicated parameter is already summed over 'data'.
  mapped = jax.jit(jax.shard_map(grad, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P(), P("data"))))(params, x)
  for got in (sharded, mapped):
    # Per-shard partial sums add up in another order than one device's sum.
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6 * np.abs(e).max()), got, expected)
