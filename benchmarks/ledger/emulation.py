"""What a CUDA device does to tensor sizes that ``meta`` tensors do not: autocast and the SDPA kernel.

Autocast does nothing on ``meta``, so :class:`CudaEmulation`, a ``TorchFunctionMode`` (it runs above
autograd, where autocast runs), applies CUDA autocast's cast policies itself inside
:meth:`CudaEmulation.autocast` regions: the inputs of its lower-precision ops are cast to bf16 and of
its fp32 ops to fp32 *before* autograd records the op, so what autograd saves for backward and what
the op returns have the sizes a GPU holds. The op lists are CUDA autocast's (``AT_FORALL_*`` in
``aten/src/ATen/autocast_mode.h``, the version whose kernels torch 2.13 registers for the
``AutocastCUDA`` key; since torch 2.4 the upsample ops are in the fp32 list). Covered here, by the
Python function a call reaches (:data:`LOWER_PRECISION`, :data:`FP32`, :data:`FP32_OUTPUT`,
:data:`PROMOTE`), which is every op of that list a MADM step calls and the others of the same
families. As on the GPU, only floating tensors of the device (here ``meta``, not CPU ones) are cast,
and the bf16 casts of fp32 leaf tensors that require grad (the trained weights) are cached until the
outermost region ends (autocast's weight-cast cache; ``cached_cast`` in ``autocast_mode.cpp``).

Outside autocast it also stands in for what the CUDA build does differently from the meta one:

- ``F.scaled_dot_product_attention`` runs the kernel an sm80+ GPU picks: flash attention for bf16/fp16
  with head dims <= 256 and no mask (it saves the output and a (B,H,L) fp32 logsumexp, never the
  (L,L) attention matrix), else memory-efficient attention; the meta build would otherwise take the
  math path, which materialises the attention matrix.
- ``torch.unique`` (data-dependent size) returns ``unique_size`` elements; ``bool()`` and ``.item()``
  of a meta tensor read as ``True`` / ``0.0`` (finite loss and gradients: no step is skipped).
- Checkpointed segments (``torch.utils.checkpoint``, non-reentrant) recompute inside the autocast
  state they were first run in: :meth:`checkpoint_contexts` and :meth:`checkpoint` give them that
  (torch's own checkpoint re-enters autocast only for devices that have it, not ``meta``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd.graph import _engine_run_backward
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint as torch_checkpoint
from torch.utils.weak import WeakIdKeyDictionary

#: CUDA autocast's ``lower_precision_fp`` ops (``AT_FORALL_LOWER_PRECISION_FP``), by Python name.
LOWER_PRECISION = frozenset(
    {
        "_convolution",
        "convolution",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_tbc",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "prelu",
        "addmm",
        "addmv",
        "addr",
        "matmul",
        "__matmul__",
        "__rmatmul__",
        "einsum",
        "mm",
        "mv",
        "vecdot",
        "linear",
        "addbmm",
        "baddbmm",
        "bmm",
        "chain_matmul",
        "multi_dot",
        "lstm_cell",
        "gru_cell",
        "rnn_tanh_cell",
        "rnn_relu_cell",
        "scaled_dot_product_attention",
    }
)

#: CUDA autocast's ``fp32`` ops (``AT_FORALL_FP32``): every floating input is cast to fp32.
FP32 = frozenset(
    {
        "acos",
        "asin",
        "cosh",
        "erfinv",
        "exp",
        "expm1",
        "log",
        "log10",
        "log2",
        "log1p",
        "reciprocal",
        "rsqrt",
        "sinh",
        "tan",
        "pow",
        "__pow__",
        "__rpow__",
        "softplus",
        "layer_norm",
        "group_norm",
        "cosine_similarity",
        "poisson_nll_loss",
        "cosine_embedding_loss",
        "nll_loss",
        "hinge_embedding_loss",
        "kl_div",
        "l1_loss",
        "smooth_l1_loss",
        "huber_loss",
        "mse_loss",
        "margin_ranking_loss",
        "multilabel_margin_loss",
        "soft_margin_loss",
        "triplet_margin_loss",
        "multi_margin_loss",
        "binary_cross_entropy_with_logits",
        "dist",
        "pdist",
        "cdist",
        "renorm",
        "logsumexp",
        # F.interpolate reaches upsample_{nearest,linear,bilinear,bicubic,trilinear}*: all in the fp32
        # list since torch 2.4 (F.interpolate's "area" mode is adaptive pooling: handled below).
        "interpolate",
        "upsample",
        "upsample_nearest",
        "upsample_bilinear",
        # cross_entropy = log_softmax + nll_loss, both fp32 under autocast: the same as casting its input.
        "cross_entropy",
    }
)

#: CUDA autocast's ``fp32_set_opt_dtype`` ops: without an explicit dtype, the output is fp32.
FP32_OUTPUT = frozenset(
    {"prod", "softmax", "log_softmax", "cumprod", "cumsum", "vector_norm", "matrix_norm", "sum"}
)

#: CUDA autocast's ``promote`` ops: all floating inputs cast to the widest floating type among them.
PROMOTE = frozenset(
    {
        "addcdiv",
        "addcmul",
        "atan2",
        "bilinear",
        "cross",
        "dot",
        "vdot",
        "grid_sample",
        "index_put",
        "tensordot",
        "scatter_add",
    }
)

#: Largest head dimension flash attention takes (FlashAttention-2 in torch's CUDA build).
FLASH_MAX_HEAD_DIM = 256


class CudaEmulation(TorchFunctionMode):
    """Emulate CUDA autocast (bf16) and CUDA's attention kernels on ``meta`` tensors (module docstring).

    Args:
        device_type: the device standing in for CUDA (``"meta"``).
        dtype: autocast's lower-precision type (bf16 for Lightning's ``bf16-mixed``).
        unique_size: the length ``torch.unique`` returns on that device (a data-dependent size; it only
            sizes index tensors of a few hundred bytes).
    """

    def __init__(self, device_type: str = "meta", dtype: torch.dtype = torch.bfloat16, unique_size: int = 12):
        super().__init__()
        self.device_type = device_type
        self.dtype = dtype
        self.unique_size = unique_size
        self.enabled = False
        self._depth = 0
        self._cache: WeakIdKeyDictionary = WeakIdKeyDictionary()

    # ------------------------------------------------------------------------------- regions
    @contextlib.contextmanager
    def autocast(self, enabled: bool = True) -> Iterator[None]:
        """A ``torch.autocast("cuda", dtype)`` region (``enabled=False``: a region with autocast off).

        The weight-cast cache is cleared when the outermost region ends, as ``torch.autocast`` does.
        """
        previous = self.enabled
        self.enabled = enabled
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.enabled = previous
            if self._depth == 0:
                self._cache = WeakIdKeyDictionary()

    def checkpoint_contexts(
        self, inner: Callable[[], tuple[Any, Any]] | None = None
    ) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        """``context_fn`` for ``torch.utils.checkpoint``: recompute in the autocast state of the forward.

        Args:
            inner: the segment's own ``context_fn`` (its two contexts are kept), or None.
        """
        forward, recompute = (
            inner() if inner is not None else (contextlib.nullcontext(), contextlib.nullcontext())
        )
        enabled = self.enabled

        @contextlib.contextmanager
        def recompute_in_state() -> Iterator[None]:
            with recompute, self.autocast(enabled):
                yield

        return forward, recompute_in_state()

    def checkpoint(self, function: Callable[..., Any], *args: Any) -> Any:
        """Diffusers' ``gradient_checkpointing_func`` (non-reentrant, as diffusers' default), recomputing
        in the forward's autocast state."""
        return torch_checkpoint(function, *args, use_reentrant=False, context_fn=self.checkpoint_contexts)

    # --------------------------------------------------------------------------------- casting
    def _eligible(self, tensor: torch.Tensor) -> bool:
        return (
            tensor.device.type == self.device_type
            and tensor.is_floating_point()
            and tensor.dtype != torch.float64
        )

    def _cast_tensor(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if not self._eligible(tensor) or tensor.dtype == dtype:
            return tensor
        cacheable = (
            dtype == self.dtype
            and tensor.dtype == torch.float32
            and tensor.requires_grad
            and tensor.is_leaf
            and not tensor._is_view()
        )
        if not cacheable:
            return tensor.to(dtype)
        cast = self._cache.get(tensor)
        if cast is None:
            cast = tensor.to(dtype)
            self._cache[tensor] = cast
        return cast

    def _cast(self, value: Any, dtype: torch.dtype) -> Any:
        if isinstance(value, torch.Tensor):
            return self._cast_tensor(value, dtype)
        if isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value):
            return type(value)(self._cast(v, dtype) for v in value)
        return value

    def _widest(self, values: Any) -> torch.dtype:
        for value in values:
            items = value if isinstance(value, list | tuple) else (value,)
            for item in items:
                if isinstance(item, torch.Tensor) and self._eligible(item) and item.dtype == torch.float32:
                    return torch.float32
        return self.dtype

    # ------------------------------------------------------------------------------- dispatch
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func is torch.Tensor.__bool__ and args[0].device.type == self.device_type:
            return True
        if func is torch.Tensor.item and args[0].device.type == self.device_type:
            return 0.0
        if name == "unique" and args and args[0].device.type == self.device_type:
            return torch.zeros(self.unique_size, dtype=args[0].dtype, device=args[0].device)
        if self.enabled:
            if name in LOWER_PRECISION:
                args, kwargs = self._cast(args, self.dtype), self._cast(kwargs, self.dtype)
            elif name in FP32 and not (name == "interpolate" and kwargs.get("mode", _arg(args, 3)) == "area"):
                args, kwargs = self._cast(args, torch.float32), self._cast(kwargs, torch.float32)
            elif name in FP32_OUTPUT and kwargs.get("dtype") is None:
                first = args[0] if args else None
                if (
                    isinstance(first, torch.Tensor)
                    and self._eligible(first)
                    and not _has_positional_dtype(args)
                ):
                    kwargs = {**kwargs, "dtype": torch.float32}
            elif name in PROMOTE:
                widest = self._widest((*args, *kwargs.values()))
                args, kwargs = self._cast(args, widest), self._cast(kwargs, widest)
        if name == "scaled_dot_product_attention":
            return self._attention(func, args, kwargs)
        if func is torch.Tensor.backward:
            # A mode is off while its handler runs; the backward runs with it back on, so that
            # checkpointed segments recompute under the emulation (as on the GPU, in bf16). The engine is
            # called directly: Tensor.backward would hand itself to the mode again.
            with self:
                return _tensor_backward(*args, **kwargs)
        return func(*args, **kwargs)

    def _attention(self, func: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        """SDPA as CUDA runs it: flash attention where it applies, else memory-efficient attention."""
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
        bound = dict(zip(names, args, strict=False)) | kwargs
        query, key, value = bound["query"], bound["key"], bound["value"]
        mask, dropout = bound.get("attn_mask"), bound.get("dropout_p", 0.0)
        causal, scale = bound.get("is_causal", False), bound.get("scale")
        if query.device.type != self.device_type or bound.get("enable_gqa", False):
            return func(*args, **kwargs)
        head_dim = query.shape[-1]
        half = query.dtype in (torch.float16, torch.bfloat16)
        if mask is None and half and head_dim <= FLASH_MAX_HEAD_DIM and head_dim % 8 == 0:
            return torch.ops.aten._scaled_dot_product_flash_attention(
                query, key, value, dropout, causal, False, scale=scale
            )[0]
        if head_dim % (8 if half else 4) == 0:
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
            return torch.ops.aten._scaled_dot_product_efficient_attention(
                query, key, value, mask, needs_grad, dropout, causal, scale=scale
            )[0]
        return func(*args, **kwargs)  # the math path, as on the GPU


def _tensor_backward(
    tensor: torch.Tensor,
    gradient: torch.Tensor | None = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Any = None,
) -> None:
    """``tensor.backward(...)`` as ``torch.autograd.backward`` runs it, minus its torch-function check
    (which would hand the call back to the mode, and run the engine with the mode off)."""
    gradient = torch.ones_like(tensor) if gradient is None else gradient
    _engine_run_backward(
        (tensor,),
        (gradient,),
        create_graph if retain_graph is None else retain_graph,
        create_graph,
        tuple(inputs) if inputs is not None else (),
        allow_unreachable=True,
        accumulate_grad=True,
    )


def _arg(args: tuple, index: int) -> Any:
    return args[index] if len(args) > index else None


def _has_positional_dtype(args: tuple) -> bool:
    return any(isinstance(a, torch.dtype) for a in args[1:])
