"""The CUDA-graph executor of the training step, and the check that a step can be captured.

A CUDA graph records the kernels of one G iteration (:meth:`~ganbench.models.base.GANModule.iteration`)
once and replays them: the same kernels, on the same memory, with the same scalar arguments. A
replay therefore equals the eager iteration only when the iteration is *static*: nothing it does
depends on a value the host changes between iterations (a Python float baked into a kernel, a
branch on the step count), it never reads a device value on the host, and state carried from one
iteration to the next is updated in place. ganbench keeps its steps static by writing every value
the host changes (annealed instance-noise σ, BEGAN's k, MAGAN's margin, scheduled learning rates)
into device tensors before each iteration (``host_values``), and by giving the steps that follow a
longer pattern (lazy penalties every k D steps, top-k's shrinking k) one graph per phase of it
(``graph_key``).

:class:`GraphStep` runs the iteration that way: ``2P + 1`` warm-up iterations run eagerly (``P``
phases), during which :class:`OpRecorder` records every ATen call with its non-tensor arguments;
two warm-up iterations of the same phase must make the same calls, else the fit falls back to the
eager step naming the first call that differed. Then one graph per phase is captured on its first
appearance and replayed from then on.

The recording is also how a graph is checked where there is no GPU: :class:`EmulatedGraphs`
"captures" by recording the ATen calls of the iteration (and undoing their effects, as a capture
runs nothing) and "replays" by calling them again on the recorded tensors, writing each result
into the recorded output, which is what a CUDA graph does with its kernels. A fit run through it
on the CPU equals the eager fit only if the step is static, so the tests run every family and
trick through it.
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

aten = torch.ops.aten

#: calls that read a device value on the host (``.item()``, ``bool(t)``, data-dependent shapes): not
#: allowed while a stream is capturing, and a value baked into the graph if they were
HOST_READS = frozenset({aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
                        aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
                        aten.unique_dim.default, aten.unique_consecutive.default})


#: calls that copy memory, possibly between the host and the device
COPIES = frozenset({aten._to_copy.default, aten.copy_.default, aten._copy_from.default,
                    aten._copy_from_and_resize.default})


class GraphFallback(Exception):
    """The step cannot be captured; the message says why (it completes "falls back ... because ")."""


def _describe(value: Any) -> Any:
    """A call argument as it matters to a replay: tensors by shape, dtype and device (their memory is
    the graph's business), everything else by value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.device.type)
    if isinstance(value, (list, tuple)):
        return type(value)(_describe(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _describe(v)) for k, v in value.items())
    if isinstance(value, torch.Generator):  # a fresh Python wrapper per call: by device only
        return f"generator({value.device.type})"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if value is None or isinstance(value, (bool, int, float, complex, str, torch.dtype, torch.device, torch.layout,
                                           torch.memory_format)):
        return value
    return type(value).__name__


def _short(value: Any) -> str:
    if isinstance(value, tuple) and value and value[0] == "tensor":
        return f"tensor{list(value[1])}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return repr(value)


def _call_text(described: tuple) -> str:
    args, kwargs = described
    return ", ".join([*(_short(a) for a in args), *(f"{k}={_short(v)}" for k, v in kwargs)])


class OpRecorder(TorchDispatchMode):
    """Records every ATen call made under it: ``signature`` holds ``(op, arguments)`` with tensors
    described by shape; with ``keep`` the calls themselves (op, arguments, result) are kept too, for
    :class:`EmulatedGraphs` to replay. ``undo`` restores, on exit, every tensor a call wrote to its
    value before the first write (a capture that runs nothing)."""

    def __init__(self, keep: bool = False, undo: bool = False) -> None:
        super().__init__()
        self.keep, self.undo = keep, undo
        self.signature: list[tuple[str, Any]] = []
        self.calls: list[tuple[Any, tuple, dict, Any]] = []
        self.host_reads: list[str] = []
        self._saved: dict[int, tuple[torch.UntypedStorage, torch.UntypedStorage]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.undo:  # by storage: the same tensor may come as a different Python object per call
            for tensor in _written(func, args, kwargs):
                storage = tensor.untyped_storage()
                if storage.data_ptr() not in self._saved:
                    self._saved[storage.data_ptr()] = (storage, storage.clone())
        out = func(*args, **kwargs)
        if func.namespace == "profiler":  # record_function markers: no kernel
            return out
        name = str(func)
        self.signature.append((name, _describe((args, kwargs))))
        if func in HOST_READS:
            self.host_reads.append(f"the step reads a device value on the host ({name})")
        elif func in COPIES:
            devices = sorted({t.device.type for t in tree_flatten((args, kwargs, out))[0]
                              if isinstance(t, torch.Tensor)})
            if len(devices) > 1:  # a host-device transfer: from pageable memory it is not capturable
                self.host_reads.append(f"the step copies between devices ({name}, {' and '.join(devices)})")
        if self.keep:
            self.calls.append((func, args, kwargs, out))
        return out

    def restore(self) -> None:
        for storage, before in self._saved.values():
            storage.copy_(before)
        self._saved.clear()


#: batch-norm kernels that update the running statistics (arguments 3 and 4 in training mode)
#: although their schema does not mark them as written
_UNMARKED_WRITES = frozenset(getattr(aten, name).default for name in (
    "native_batch_norm", "cudnn_batch_norm", "miopen_batch_norm") if hasattr(aten, name))


def _written(func, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors a call writes to (in-place and ``out=`` arguments), from its schema."""
    schema = func._schema
    written = []
    if func in _UNMARKED_WRITES and len(args) > 5 and args[5]:
        written.extend(t for t in args[3:5] if isinstance(t, torch.Tensor))
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = kwargs.get(arg.name, args[i] if i < len(args) and not arg.kwarg_only else None)
        written.extend(t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))
    return written


def first_difference(a: list[tuple[str, Any]], b: list[tuple[str, Any]]) -> str | None:
    """Where two recorded iterations of the same phase part ways, in words; None when they agree."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            if x[0] != y[0]:
                return f"the step's call #{i} is {x[0]} in one iteration and {y[0]} in another"
            return (f"the step's call #{i} is {x[0]}({_call_text(x[1])}) in one iteration and "
                    f"{y[0]}({_call_text(y[1])}) in another (a value the host changes, baked into a graph)")
    if len(a) != len(b):
        return f"one iteration makes {len(a)} calls and another {len(b)}"
    return None


class CudaGraphs:
    """Capture and replay with ``torch.cuda.CUDAGraph``, as PyTorch's whole-network recipe does."""

    devices: tuple[str, ...] = ("cuda",)

    def unavailable(self, model) -> str | None:
        return None if model.device.type == "cuda" else "it is not on a CUDA device"

    @contextlib.contextmanager
    def warming(self, model):
        """Warm-up iterations run on a side stream (lazy initialisation stays out of the capture)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    def __init__(self) -> None:
        self.pool: Any = None
        self.stream: torch.cuda.Stream | None = None

    def capture(self, model, fn) -> tuple[Any, Any]:
        """Records ``fn`` (nothing runs); returns the graph and ``fn``'s result (static outputs).

        The graphs of one executor share a memory pool (they replay one at a time, in the order
        of the iterations) and a capture stream of their own: graphs of other executors (the bench
        builds several) never share a stream's cuBLAS workspace with these. ``thread_local``
        capture leaves other threads (a loader pinning memory) free to call CUDA meanwhile."""
        if self.stream is None:
            self.stream = torch.cuda.Stream()
        graph = torch.cuda.CUDAGraph()
        for generator in model.rng.generators:  # non-default generators are registered before capture
            graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
                out = fn()
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GraphFallback(f"capturing the step failed: {first}") from err
        if self.pool is None:
            self.pool = graph.pool()
        return graph, out

    def replay(self, graph) -> None:
        graph.replay()


class _Replay:
    """The recorded calls of one iteration, called again on the recorded tensors."""

    def __init__(self, calls: list[tuple[Any, tuple, dict, Any]]) -> None:
        self.calls = []
        for func, args, kwargs, out in calls:
            schema = func._schema
            if not _written(func, args, kwargs) and any(r.alias_info is not None for r in schema.returns):
                continue  # a view: it aliases memory the replay writes anyway
            fresh = [r.alias_info is None for r in schema.returns]
            self.calls.append((func, args, kwargs, out, fresh))

    def replay(self) -> None:
        with torch.no_grad():
            for func, args, kwargs, out, fresh in self.calls:
                new = func(*args, **kwargs)
                if not any(fresh):  # in place only
                    continue
                if len(fresh) == 1:
                    new, out = (new,), (out,)
                for is_fresh, target, value in zip(fresh, out, new):
                    if is_fresh:  # a graph writes its kernels' results into the memory it captured
                        tree_map(_write, target, value)


def _write(target: Any, value: Any) -> None:
    """A recorded result gets the replayed one, in place; autograd's zero tensors hold no memory."""
    if isinstance(target, torch.Tensor) and not target._is_zerotensor():
        target.copy_(value)


@contextlib.contextmanager
def _capturable_here(device: torch.device):
    """torch's capturable optimizers (device-side step counts and bias corrections) run on any
    device, but check for the graph-capable ones; the emulation lets them run where it runs."""
    import importlib

    patched = []
    for name in ("adam", "adamw", "rmsprop", "sgd", "optimizer"):
        module = importlib.import_module(f"torch.optim.{name}")
        original = getattr(module, "_get_capturable_supported_devices", None)
        if original is not None:
            def allowed(*a, _original=original, **k):
                return [*_original(*a, **k), device.type]
            module._get_capturable_supported_devices = allowed
            patched.append((module, original))
    try:
        yield
    finally:
        for module, original in patched:
            module._get_capturable_supported_devices = original


class EmulatedGraphs:
    """Graph semantics without a GPU: a capture records the ATen calls of the iteration (then undoes
    what they wrote, since a capture runs nothing) and a replay calls them again on the recorded
    tensors, each result written into the memory the recorded call returned. It is exact for a static
    step and wrong, as a CUDA graph is, for a step that is not."""

    devices: tuple[str, ...] = ("cpu", "cuda")

    def unavailable(self, model) -> str | None:
        return None

    @contextlib.contextmanager
    def warming(self, model):
        with _capturable_here(model.device):
            yield

    def capture(self, model, fn) -> tuple[Any, Any]:
        generators = [torch.default_generator, *model.rng.generators]
        states = [g.get_state() for g in generators]
        recorder = OpRecorder(keep=True, undo=True)
        with _capturable_here(model.device), recorder:
            out = fn()
        recorder.restore()
        for g, state in zip(generators, states):
            g.set_state(state)
        if recorder.host_reads:
            raise GraphFallback(recorder.host_reads[0])
        return _Replay(recorder.calls), out

    def replay(self, graph: _Replay) -> None:
        graph.replay()


class GraphStep:
    """One G iteration per call as replays of captured graphs (see the module's docstring).

    ``iterate(chunks)`` runs the module's iteration without ``after_g_step`` and returns its
    :class:`~ganbench.models.engine.finish.StepResult` (default:
    :meth:`~ganbench.models.base.GANModule.plain_iteration`, with the Trainer's optimizers), whose
    tensors — losses and the values to log — are the graph's outputs; ``optimizers`` are the torch
    optimizers it steps. The caller writes the host's values before a call and hands the result to
    :meth:`~ganbench.models.engine.finish.Finish.finish` after it (which counts the steps)."""

    def __init__(self, model, backend: Any, batch: tuple[torch.Tensor, torch.Tensor],
                 iterate: Any = None, optimizers: tuple[torch.optim.Optimizer, ...] | None = None) -> None:
        self.model, self.backend = model, backend
        self._iterate = iterate or model.plain_iteration
        self.optimizers = optimizers
        self.static = tuple(t.clone() for t in batch)
        self.period = model.graph_period()
        self.warmup = 2 * self.period + 1
        self.done = 0
        self.fallback: str | None = None
        self.signatures: list[list[tuple[str, Any]]] = []
        self.seen: set[Any] = set()
        self.graphs: dict[Any, tuple[Any, Any, dict]] = {}

    def __call__(self, batch) -> Any:
        """Runs one iteration on ``batch``; returns its result, ``replayed`` when it was a replay (whose
        losses the graph itself folded into the divergence flag). A key (phase) is captured the
        second time it comes, after one eager iteration of it (lazy initialisation, host reads),
        and the capture is replayed for its own iteration, so what the iteration leaves behind is
        the graph's output. When the step cannot be captured, ``fallback`` says why; the iteration
        still ran (eagerly), and the caller goes on eagerly."""
        for static, new in zip(self.static, batch):
            static.copy_(new)
        model = self.model
        key = model.graph_key()
        if self.done >= self.warmup and key in self.seen:
            if key not in self.graphs:
                try:
                    self.capture(key)
                except GraphFallback as err:
                    self.fallback = str(err)
            if self.fallback is None:
                graph, result, bindings = self.graphs[key]
                self.backend.replay(graph)
                _rebind(model, bindings)
                self.done += 1
                return result._replace(replayed=True)
        self.seen.add(key)
        with self.backend.warming(model):
            if self.done == 0:  # lazy initialisation (optimizer state, references): not compared
                result = self.iterate()
            else:
                recorder = OpRecorder()
                with recorder:
                    result = self.iterate()
                if self.done < self.warmup:
                    self.signatures.append(recorder.signature)
                if self.fallback is None:
                    self.fallback = recorder.host_reads[0] if recorder.host_reads else self.check()
        self.done += 1
        return result

    def iterate(self) -> Any:
        model = self.model
        d_steps = model._d_steps
        out = self._iterate(model.split_batch(self.static))  # in the graph: a family may resize the batch
        model._d_steps = d_steps  # finish counts the steps, replayed or not
        return out._replace(counted=False)

    def check(self) -> str | None:
        """Warm-up iterations ``i`` and ``i + P`` are of the same phase: their calls must agree."""
        sigs, p = self.signatures, self.period
        return first_difference(sigs[-1 - p], sigs[-1]) if self.done < self.warmup and len(sigs) > p else None

    def capture(self, key: Any) -> None:
        model = self.model
        for opt in self.optimizers or model.graph_optimizers():
            opt.zero_grad(set_to_none=True)

        def record():
            result = self.iterate()
            model._accumulate_divergence(result.d_losses, result.g_losses)  # the replay folds them into the flag
            return result

        for old in [k for k in self.graphs if k[1:] != key[1:]]:  # only the phase (key[0]) recurs
            del self.graphs[old]
        before = _bindings(model)
        graph, result = self.backend.capture(model, record)
        after = _bindings(model)
        rebound = {k: v for k, v in after.items() if before.get(k, (None, None))[1] is not v[1]}
        self.graphs[key] = (graph, result, rebound)


def _bindings(model) -> dict[tuple[str, int | str], tuple[Any, Any]]:
    """What an iteration may rebind on the Python side: the module's tensor attributes (and tuples
    of them) and every parameter's ``.grad``, as ``key -> (owner, value)``."""
    out: dict[tuple[str, int | str], tuple[Any, Any]] = {}
    for name, value in vars(model).items():
        if isinstance(value, torch.Tensor) or (isinstance(value, tuple) and value and all(
                isinstance(t, torch.Tensor) or t is None for t in value)):
            out[("attr", name)] = (model, value)
    for p in model.parameters():
        out[("grad", id(p))] = (p, p.grad)
    return out


def _rebind(model, bindings: dict[tuple[str, int | str], tuple[Any, Any]]) -> None:
    """After a replay, point what the captured iteration rebound (a family's values kept for
    ``after_g_step``, the gradients) at this graph's outputs: with several graphs (phases), the
    attributes would otherwise show the last captured one's."""
    for (kind, name), (owner, value) in bindings.items():
        if kind == "attr":
            owner.__dict__[name] = value
        else:
            owner.grad = value


def fallback_notice(model, reason: str) -> None:
    if model._trainer is None or model.trainer.is_global_zero:
        print(f"ganbench: model.cuda_graph falls back to the eager step because {reason}.", file=sys.stderr)
