"""``torch.compile`` for a module's forward, in place, with a clean fall-back to eager.

:func:`maybe_compile` compiles ``module.forward`` in place (``nn.Module.compile``), so the object,
its ``state_dict`` keys (no ``_orig_mod.`` prefix), checkpoints, EMA and DDP wrapping stay as they
are, and ``Detector.predict`` / ``Detector.loss``, which call ``self(images)``, run the compiled
network while post-processing and the loss pipeline stay eager.

It never makes a run fail for compile's sake: where compiling is impossible (no ``torch.compile``,
an unsupported Python, no C++ compiler for inductor on CPU) or the first compiled call fails, it
logs a warning and the module runs eagerly. A copy of a compiled module (``copy.deepcopy``, as
``ModelEMA`` makes) runs eagerly rather than through the original's compiled code.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["COMPILE_MODES", "compile_unavailable_reason", "is_compiled", "maybe_compile"]

logger = logging.getLogger("detkit")

# torch.compile's modes; None / "none" means eager.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_unavailable_reason(backend: str = "inductor", device: torch.device | str = "cpu") -> str | None:
    """Why ``torch.compile`` with ``backend`` cannot run on ``device`` here, or None when it can."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo
    except Exception as e:  # noqa: BLE001 - any import failure means no compile
        return f"torch._dynamo cannot be imported: {e}"
    if not dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python version"
    if backend == "inductor" and torch.device(device).type == "cpu":
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx[-1] if inductor_config.cpp.cxx else None
        if not any(shutil.which(c) for c in (cxx, "g++", "clang++", "c++") if c):
            return "inductor on CPU needs a C++ compiler (g++ or clang++) on PATH"
    return None


def _summary(error: Exception, limit: int = 300) -> str:
    """The error message up to its first blank line, on one line (dynamo appends long advice)."""
    head = str(error).strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in head.splitlines())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _CompiledCall:
    """The compiled ``_call_impl`` of one module; falls back to eager if its first call fails.

    ``inductor_config`` is patched around every call: TorchDynamo reads some settings (freezing)
    from the global inductor config while it traces, which happens inside the call, so a patch
    there applies to this module alone where ``torch.compile(options=...)`` would not reach.
    """

    def __init__(self, module: nn.Module, compiled: Callable[..., Any], label: str,
                 inductor_config: dict[str, Any] | None = None) -> None:
        self.module_name = label
        self.compiled = compiled
        self.eager = module._call_impl
        self.inductor_config = inductor_config or {}
        self.checked = False
        self.failed = False

    def _run_compiled(self, *args: Any, **kwargs: Any) -> Any:
        if not self.inductor_config:
            return self.compiled(*args, **kwargs)
        from torch._inductor import config as inductor_config

        with inductor_config.patch(self.inductor_config):
            return self.compiled(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return self.eager(*args, **kwargs)
        if self.checked:
            return self._run_compiled(*args, **kwargs)
        try:
            out = self._run_compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - compile errors come in many types
            out = self.eager(*args, **kwargs)  # a bad input raises here, as it would uncompiled
            self.failed = True
            logger.warning(f"torch.compile of {self.module_name} failed on its first call, running eagerly: "
                           f"{type(e).__name__}: {_summary(e)}")
            return out
        self.checked = True
        return out

    def __deepcopy__(self, memo: dict) -> None:
        # A copy must not call the original module's compiled code: the copy runs eagerly.
        return None


def maybe_compile(
    module: nn.Module,
    mode: str | None,
    *,
    backend: str = "inductor",
    dynamic: bool | None = None,
    fullgraph: bool = False,
    freeze: bool = False,
) -> nn.Module:
    """Compile ``module``'s forward in place when ``mode`` asks for it; return ``module``.

    Args:
        module: the module whose ``__call__`` should run compiled (e.g. a ``Detector``).
        mode: None or ``"none"`` (eager, nothing done), or one of :data:`COMPILE_MODES`.
        backend: ``torch.compile`` backend (``"inductor"``; ``"eager"``/``"aot_eager"`` for debugging).
        dynamic: ``torch.compile``'s ``dynamic`` (None: specialise, then mark changing sizes dynamic,
            which suits multi-scale training).
        fullgraph: fail (and fall back) on any graph break instead of splitting.
        freeze: inference only (inductor's ``freezing``): under ``torch.no_grad`` the weights become
            constants, BatchNorm folds into the convolutions and weights are prepacked for oneDNN
            (on a 2-core CPU: 0.67x eager's time, where plain compile took 1.16x; see
            ``docs/benchmarks.md``). The weights must not change after the first call; use it for
            predictors, not for a model being trained.

    Returns:
        ``module`` itself, compiled or (with a logged warning) eager.

    Raises:
        ValueError: ``mode`` is not None, ``"none"`` or one of :data:`COMPILE_MODES`; ``freeze``
            with a backend other than inductor.
    """
    if mode is None or mode == "none":
        return module
    if mode not in COMPILE_MODES:
        accepted = ", ".join(map(repr, COMPILE_MODES))
        raise ValueError(f"unknown compile mode {mode!r}; accepted: None, 'none', {accepted}")
    if freeze and backend != "inductor":
        raise ValueError(f"freeze=True needs the inductor backend, got {backend!r}")
    label = type(module).__name__
    param = next(module.parameters(), None)
    reason = compile_unavailable_reason(backend, param.device if param is not None else "cpu")
    if reason is not None:
        logger.warning(f"torch.compile unavailable ({reason}); {label} runs eagerly")
        return module
    settings: dict[str, Any] = {"mode": mode}
    if freeze:
        from torch._inductor import list_mode_options

        # A backend of its own (the mode spelled out as options, plus freezing), so that compiled
        # code cached for an unfrozen module of the same structure is not reused for this one.
        settings = {"options": {**list_mode_options(mode), "freezing": True}}
    try:
        compiled = torch.compile(module._call_impl, backend=backend, dynamic=dynamic, fullgraph=fullgraph,
                                 **settings)
    except Exception as e:  # noqa: BLE001
        logger.warning(f"torch.compile of {label} failed ({type(e).__name__}: {_summary(e)}); running eagerly")
        return module
    # What nn.Module.compile() does, with the first-call fall-back around it.
    module._compiled_call_impl = _CompiledCall(module, compiled, label, {"freezing": True} if freeze else None)
    return module


def is_compiled(module: nn.Module) -> bool:
    """True while ``module`` runs through a compiled forward (False after a fall-back)."""
    call = getattr(module, "_compiled_call_impl", None)
    return call is not None and not (isinstance(call, _CompiledCall) and call.failed)
