"""Every change layerseg-merge makes to mergekit at run time, each only where mergekit lacks the feature.

mergekit 0.1.5 has no public way to do what the plugin needs, so the plugin changes a few of its
internals. Each such workaround is listed in :data:`WORKAROUNDS` with the patch of the upstream
series (``upstream/`` in the repository) that makes it unnecessary, and is installed only where
the mergekit at hand lacks that patch's feature, detected by the feature itself (an API, or the
code of the bug), never by a version string. With the series applied nothing here is installed:
the plugin then uses mergekit's public hooks only (``register_architecture``, ``register(...,
replace=True)``, the ``mergekit.plugins`` entry point, the method's ``unused_parameters`` and
``model_card`` hooks and its spec's input policies). :func:`active` lists what this process installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from layerseg_merge.engine.arithmetic import cast_checked
from layerseg_merge.engine.recipe_yaml import RecipeError
from layerseg_merge.engine.settings import METHOD_NAME
from layerseg_merge.plugin import planning
from layerseg_merge.plugin.planning import model_layout, plan_of_task

if TYPE_CHECKING:
    import torch

WORKAROUNDS: dict[str, str] = {
    # name: the upstream patch (upstream/NNNN-*.patch) that retires it
    "tuple_aliases": "0001-Fix-planning-optional-weights-that-declare-aliases.patch",
    "hub_offline": "0002-Resolve-Hub-models-from-the-local-cache-when-offline.patch",
    "plan_in_memory": "0003-Fix-MergePlanner.plan_in_memory.patch",
    "parameter_checks": "0004-Warn-about-merge-parameters-the-method-does-not-use-.patch",
    "output_path": "0005-Refuse-an-output-path-that-is-lies-inside-or-contain.patch",
    "kernel_inputs": "0006-Give-merge-kernels-the-tensor-s-position-companion-t.patch",
    "architecture_registry": "0007-Add-register_architecture-and-a-mergekit.plugins-ent.patch",
    "startup_hook": "0007-Add-register_architecture-and-a-mergekit.plugins-ent.patch",
    "model_card": "0008-Let-a-merge-method-write-the-model-card.patch",
    "recipe_source": "0009-Refuse-recipes-that-YAML-would-read-silently-wrong.patch",
    "config_cache": "0014-Parse-each-input-model-s-config-once.patch",
    "out_dtype_check": "0016-Refuse-an-out_dtype-cast-that-overflows.patch",
}

_ACTIVE: list[str] = []


@contextlib.contextmanager
def _probe_model(tensors: dict):
    """A throw-away model folder holding ``tensors``, as a mergekit ModelReference (removed from mergekit's loader
    cache afterwards)."""
    from mergekit.common import ModelReference
    from mergekit.io.tasks import LoaderCache
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="layerseg-probe-") as folder:
        save_file(tensors, os.path.join(folder, "model.safetensors"))
        with open(os.path.join(folder, "config.json"), "w") as config:
            config.write('{"model_type": "segformer"}')
        model = ModelReference.parse(folder)
        try:
            yield model
        finally:
            LoaderCache().loaders.pop(model, None)


def _lacks_tuple_aliases() -> bool:
    """Behaviour: does the planner take the tuple WeightInfo stores an optional weight's aliases in?"""
    import torch
    from mergekit.architecture import WeightInfo
    from mergekit.plan import MergePlanner

    weight = WeightInfo(name="probe", aliases=("probe.alias",), optional=True)
    with _probe_model({"probe.alias": torch.zeros(1)}) as model:
        try:  # no planner: past the look-up of the aliases it fails on the missing planner, as it should
            MergePlanner.plan_tensor(None, weight, [weight], [model], None)
        except TypeError as error:
            return "concatenate" in str(error)  # list + tuple
        except Exception:  # noqa: BLE001
            return False
    return False


def _lacks_hub_offline() -> bool:
    """Behaviour: offline, does mergekit find a Hub model in the cache without asking the Hub for its files?"""
    import huggingface_hub.constants
    from mergekit.common import ModelReference

    commit = "0" * 40
    with tempfile.TemporaryDirectory(prefix="layerseg-probe-") as cache:
        repo = os.path.join(cache, "models--layerseg-probe--model")
        os.makedirs(os.path.join(repo, "refs"))
        os.makedirs(os.path.join(repo, "snapshots", commit))
        with open(os.path.join(repo, "refs", "main"), "w") as ref:
            ref.write(commit)
        offline = huggingface_hub.constants.HF_HUB_OFFLINE
        huggingface_hub.constants.HF_HUB_OFFLINE = True
        try:
            found = ModelReference.parse("layerseg-probe/model").local_path(cache_dir=cache)
        except Exception:  # noqa: BLE001 (it asked the Hub, which offline mode refuses)
            return True
        finally:
            huggingface_hub.constants.HF_HUB_OFFLINE = offline
    return os.path.basename(found) != commit


def _lacks_plan_in_memory() -> bool:
    from mergekit.graph import Task
    from mergekit.io.tasks import ReturnTensor

    return ReturnTensor.model_fields["tensor_task"].annotation is not Task


def _lacks_parameter_checks() -> bool:
    from mergekit.merge_methods.base import MergeMethod

    return not hasattr(MergeMethod, "unused_parameters")


def _lacks_output_path() -> bool:
    import mergekit.merge

    return not hasattr(mergekit.merge, "check_output_path")


def _lacks_kernel_inputs() -> bool:
    from mergekit.merge_methods.base import MergeMethodSpec

    return "companions" not in {f.name for f in dataclasses.fields(MergeMethodSpec)}


def _lacks_architecture_registry() -> bool:
    import mergekit.architecture

    return not hasattr(mergekit.architecture, "register_architecture")


def _lacks_startup_hook() -> bool:
    return importlib.util.find_spec("mergekit.plugins") is None


def _lacks_model_card() -> bool:
    from mergekit.merge_methods.base import MergeMethod

    return not hasattr(MergeMethod, "model_card")


def _lacks_recipe_source() -> bool:
    import mergekit.config

    return not hasattr(mergekit.config, "load_recipe_yaml")


def _lacks_config_cache() -> bool:
    """Behaviour: does mergekit parse an input's config.json again on every call?"""
    import transformers
    from mergekit.common import ModelReference

    parse = transformers.AutoConfig.from_pretrained
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return parse(*args, **kwargs)

    with tempfile.TemporaryDirectory(prefix="layerseg-probe-") as folder:
        with open(os.path.join(folder, "config.json"), "w") as config:
            config.write('{"model_type": "segformer"}')
        model = ModelReference.parse(folder)
        transformers.AutoConfig.from_pretrained = counting
        try:
            model.config()
            model.config()
        finally:
            transformers.AutoConfig.from_pretrained = parse
    return len(calls) > 1


def _lacks_out_dtype_check() -> bool:
    """Behaviour, not source: does mergekit's in-memory output task refuse a float cast that overflows?"""
    import torch
    from mergekit.architecture import WeightInfo
    from mergekit.graph import Task
    from mergekit.io.tasks import ReturnTensor

    class Constant(Task[torch.Tensor]):
        def arguments(self) -> dict:
            return {}

        def execute(self) -> torch.Tensor:
            return torch.tensor([1e6])

    try:
        task = ReturnTensor(weight_info=WeightInfo(name="probe"), tensor_task=Constant(), dtype="float16")
        value = task.execute(tensor=torch.tensor([1e6]))
    except ValueError:
        return False  # refused, as it should
    except Exception:  # noqa: BLE001 (this mergekit cannot even build the probe: it lacks the check)
        return True
    return not bool(torch.isfinite(value).all())


_LACKS: dict[str, Callable[[], bool]] = {name: globals()[f"_lacks_{name}"] for name in WORKAROUNDS}


@cache
def lacks(name: str) -> bool:
    """Whether the mergekit at hand lacks the feature whose absence workaround ``name`` makes up for."""
    return _LACKS[name]()


def active() -> list[str]:
    """The workarounds installed in this process, in the order of :data:`WORKAROUNDS`."""
    return [name for name in WORKAROUNDS if name in _ACTIVE]


def _mark(name: str) -> None:
    if name not in _ACTIVE:
        _ACTIVE.append(name)


# --- architectures (layerseg_merge.plugin.architectures) ----------------------------------------------


class _Aliases(tuple):
    """mergekit 0.1.5 builds ``[name] + weight.aliases`` when it plans an optional weight, which fails for the
    tuple its WeightInfo stores (every alias would raise TypeError); ``__radd__`` makes that concatenation work."""

    def __radd__(self, other):
        return list(other) + list(self)


def weight_info(name: str, optional: bool, force_dtype: str | None, aliases: tuple[str, ...] = ()):
    """mergekit's WeightInfo of a tensor; ``aliases`` are the other names of a head shared between hosts."""
    from mergekit.architecture.base import WeightInfo

    if not aliases or not lacks("tuple_aliases"):
        return WeightInfo(name=name, optional=optional, force_dtype=force_dtype, aliases=tuple(aliases) or None)
    _mark("tuple_aliases")
    weight = WeightInfo(name=name, optional=optional, force_dtype=force_dtype)
    object.__setattr__(weight, "aliases", _Aliases(aliases))  # WeightInfo would coerce it to a plain tuple
    return weight


def register_architecture(architecture, names: Iterable[str]) -> None:
    """Make mergekit resolve every class in ``names`` to ``architecture`` (idempotent)."""
    if lacks("architecture_registry"):
        from mergekit.architecture.json_definitions import NAME_TO_ARCH

        _mark("architecture_registry")
        for name in names:
            NAME_TO_ARCH[name] = [architecture]
        return
    from mergekit.architecture import register_architecture

    register_architecture(architecture, replace=True)


# --- the merge method (layerseg_merge.plugin.method) ---------------------------------------------------------------


def kernel_spec_options(companions: Callable[[str], dict]) -> dict:
    """The input policies of ``layerwise_seg``'s spec, where mergekit has them (else the execute wrapper
    below screens the inputs and the kernel reads the running means itself)."""
    if lacks("kernel_inputs"):
        return {}
    from mergekit.merge_methods import NonFloatingPolicy, ResultDtype, ShapePolicy

    return dict(non_floating_policy=NonFloatingPolicy.FROM_BASE, shape_policy=ShapePolicy.KERNEL,
                result_dtype=ResultDtype.BASE, companions=companions)


def running_means(group, members, names: list[str]) -> list:
    """The running means of the BatchNorm variance ``names`` of ``members`` (entries of ``group``)."""
    companions = getattr(group, "companions", None) or {}
    if "running_mean" in companions:
        return [companions["running_mean"][entry.id] for entry in members]
    from mergekit.io.tasks import LoaderCache

    from layerseg_merge.engine.arithmetic import running_mean_name

    _mark("kernel_inputs")
    return [LoaderCache().get(entry.id).get_tensor(running_mean_name(name), device="cpu")
            for entry, name in zip(members, names)]


def planned_tensor_tasks(planner) -> list:
    """The tensor tasks a mergekit planner plans (for the card's record)."""
    targets, _ = in_memory_targets(planner)
    return [getattr(task, "tensor_task", task) for task in targets]


def in_memory_targets(planner) -> tuple[dict, bool]:
    """{task: weight} of every planned output tensor, and whether the caller casts the values to the output
    dtype (where ``plan_in_memory()`` works, its ReturnTensor tasks do)."""
    if not lacks("plan_in_memory"):
        return {task: task.weight_info for task in planner.plan_in_memory()}, False
    # mergekit 0.1.5's plan_in_memory() cannot build its ReturnTensor tasks (pydantic refuses a
    # Task[Optional[Tensor]] where Task[Tensor] is declared): run the planned tensor tasks instead.
    _mark("plan_in_memory")
    planner._plan()
    return {task: weight for weight, task in planner._tensors}, True


# --- what the workarounds run ---------------------------------------------------------------------------------


def screen_inputs(task, tensors: dict) -> dict | torch.Tensor:
    """What mergekit hands the kernel for one ``layerwise_seg`` tensor: the members of its plan.

    mergekit 0.1.5 refuses differing integer buffers and tensors of other shapes before any
    method runs; :func:`plan_tensor` decides instead (integers and single members are the
    anchor's tensor, returned as is; non-members are left out; real mismatches are refused).
    """
    if tensors.get(task.base_model) is None:
        return tensors
    plan = plan_of_task(task)
    models = [task.model_order[i] for i in plan.members]
    missing = [m for m in models if tensors.get(m) is None]
    if missing:
        raise RuntimeError(f"layerwise_seg: mergekit did not load {plan.names[models.index(missing[0])]!r} "
                           f"from {missing[0]}; please report this as a bug")
    if plan.is_copy:
        anchor = tensors[task.base_model]
        if plan.info.dtype.is_floating_point or anchor.dtype == plan.info.dtype:
            return anchor
        # a recipe `dtype:` made mergekit cast it (it can only keep int64 apart): read it as stored
        from mergekit.io.tasks import LoaderCache

        return LoaderCache().get(task.base_model).get_tensor(plan.info.name, device="cpu").to(anchor.device)
    return {m: tensors[m] for m in models}

def check_output_inputs(out_path: str, config) -> None:
    """The plain ``mergekit-yaml`` would write into an input given as OUT: refuse it, as ``layerseg merge`` does."""
    from layerseg_merge.io.output import OutputError, check_target

    inputs = [model_layout(model).path for model in config.referenced_models()]
    try:
        check_target(Path(out_path), inputs)
    except OutputError as error:
        raise RecipeError(str(error)) from None

def anchor_dtype_result(task, screened: dict, result: torch.Tensor | None) -> torch.Tensor | None:
    """A merged tensor in the anchor's dtype as loaded: its stored dtype, or the recipe's ``dtype:`` (mergekit
    casts every input to it), not the dtype mergekit promotes mixed inputs to for the arithmetic."""
    anchor = screened.get(task.base_model)
    if result is not None and anchor is not None and result.is_floating_point():
        dtype = getattr(task.gather_tensors, "dtype", None)
        why = f"the recipe's dtype {dtype}" if dtype else "the anchor's stored dtype"
        result = cast_checked(result, anchor.dtype, task.output_weight.name, why)
    return result

def checked_out_cast(producer, tensor: torch.Tensor | None, dtype: str | None, name: str) -> torch.Tensor | None:
    """A ``layerwise_seg`` float tensor cast to the recipe's ``out_dtype`` (``dtype``), refused where the cast
    overflows; every other tensor as it is (mergekit casts it). ``producer`` is the task that made it: all this
    needs is in mergekit's tasks, so it holds under every executor, whichever thread it runs in."""
    if tensor is None or not dtype or getattr(producer, "method_name", None) != METHOD_NAME \
            or not tensor.is_floating_point():
        return tensor
    from mergekit.common import dtype_from_name

    return cast_checked(tensor, dtype_from_name(dtype), name, "the recipe's out_dtype")


def install() -> None:
    """Install every workaround the mergekit at hand needs (idempotent)."""
    import os

    for name in ("tuple_aliases", "plan_in_memory"):  # used where needed (set_aliases, in_memory_targets)
        if lacks(name):
            _mark(name)
    if lacks("startup_hook") and "_layerseg_merge_hook" in sys.modules and not os.environ.get(
            "LAYERSEG_MERGE_NO_HOOK"):
        _mark("startup_hook")  # the .pth hook wraps mergekit's import to register us: no entry-point group
    if lacks("hub_offline"):
        _install_hub_offline()
    if any(lacks(name) for name in ("parameter_checks", "output_path", "model_card")):
        _install_planner_hooks()
    if lacks("model_card"):
        _install_card()
    if lacks("recipe_source"):
        _install_recipe_source()
    if lacks("kernel_inputs"):
        _install_execute()
    if lacks("config_cache"):
        _install_config_cache()
    if lacks("out_dtype_check"):
        _install_out_dtype_check()


def _once(owner, attribute: str, name: str) -> bool:
    """True unless ``owner.attribute`` is already our wrapper ``name``."""
    return getattr(getattr(owner, attribute), "_layerseg", None) != name


def _tagged(function, name: str):
    function._layerseg = name
    return function


def _install_hub_offline() -> None:
    """With HF_HUB_OFFLINE set, mergekit 0.1.5 cannot use a cached Hub model (it lists the repository's files
    online first); resolve such ids through the cache instead. Online, mergekit's own behaviour is kept."""
    from mergekit.common import ModelReference

    from layerseg_merge.io.hub import is_hub_id, is_offline, resolve_model_path

    if not _once(ModelReference, "local_path", "hub_offline"):
        return
    _mark("hub_offline")
    original = ModelReference.local_path

    def local_path(self, cache_dir=None, ignore_lora=False):
        if is_offline() and is_hub_id(self.model.path) and (ignore_lora or self.lora is None):
            return resolve_model_path(self.model.path, self.model.revision)
        return original(self, cache_dir=cache_dir, ignore_lora=ignore_lora)

    ModelReference.local_path = _tagged(local_path, "hub_offline")


def _install_config_cache() -> None:
    """mergekit 0.1.5 parses an input's config.json (``AutoConfig.from_pretrained``, several ms) on every call of
    ``ModelReference.config``, and calls it once for each tensor a model lacks (``LoadTensor`` looks for a
    checkpoint conversion of the model type): a merge across hosts parses the same file hundreds of times. Parse
    each local config.json once per file state and hand out copies (callers may change them); Hub ids and
    unreadable paths keep mergekit's own reading and messages."""
    import copy
    import os
    from collections import OrderedDict

    from mergekit.common import ModelReference

    if not _once(ModelReference, "config", "config_cache"):
        return
    _mark("config_cache")
    original = ModelReference.config
    parsed: OrderedDict = OrderedDict()

    def config(self, trust_remote_code: bool = False):
        try:
            stat = os.stat(os.path.join(self.model.path, "config.json"))
        except (OSError, TypeError, ValueError):
            return original(self, trust_remote_code=trust_remote_code)
        key = (self, bool(trust_remote_code), stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key not in parsed:
            parsed[key] = original(self, trust_remote_code=trust_remote_code)
            while len(parsed) > 64:
                parsed.popitem(last=False)
        parsed.move_to_end(key)
        return copy.deepcopy(parsed[key])

    ModelReference.config = _tagged(config, "config_cache")


def _install_planner_hooks() -> None:
    """``layerwise_seg`` recipes, when mergekit plans them: strict parameter checks and the per-merge record
    (``unused_parameters`` hook), the refusal of an output inside an input (``check_output_path``), and the
    coefficients for the card (``model_card`` hook)."""
    from mergekit.plan import MergePlanner

    if not _once(MergePlanner, "__init__", "planner"):
        return
    for name in ("parameter_checks", "output_path", "model_card"):
        if lacks(name):
            _mark(name)
    original_init, original_plan_to_disk = MergePlanner.__init__, MergePlanner.plan_to_disk

    def planner_init(self, config, *args, **kwargs):
        if config.merge_method == METHOD_NAME and lacks("parameter_checks"):
            planning.begin_merge(config)
            self._layerseg_record = planning.merge_record()
        elif config.merge_method == METHOD_NAME:
            self._layerseg_record = None  # the method's unused_parameters hook begins the merge
        original_init(self, config, *args, **kwargs)

    def plan_to_disk(self, out_path: str):
        if self.config.merge_method != METHOD_NAME:
            return original_plan_to_disk(self, out_path)
        if lacks("output_path"):
            check_output_inputs(out_path, self.config)
        tasks = original_plan_to_disk(self, out_path)
        if lacks("model_card"):
            record = getattr(self, "_layerseg_record", None) or planning.merge_record()
            planning.record_plan(record, out_path, (task for _, task in self._tensors))
        return tasks

    MergePlanner.__init__ = _tagged(planner_init, "planner")
    MergePlanner.plan_to_disk = _tagged(plan_to_disk, "planner")


def _install_card() -> None:
    import mergekit.merge

    if not _once(mergekit.merge, "generate_card", "model_card"):
        return
    _mark("model_card")
    original = mergekit.merge.generate_card

    def generate_card(config, config_yaml, name=None, **kwargs):
        record = planning.merge_record()
        if config.merge_method != METHOD_NAME or record is None or record.out_path is None:
            return original(config, config_yaml, name=name, **kwargs)
        return planning.segmentation_card(config, config_yaml, record)

    mergekit.merge.generate_card = _tagged(generate_card, "model_card")


def _install_recipe_source() -> None:
    """The plain ``mergekit-yaml`` refuses ``layerwise_seg`` recipes with keys given twice, unknown top-level
    keys or alias bombs, as ``layerseg merge`` does (mergekit 0.1.5 drops them while parsing)."""
    import mergekit.merge

    if not _once(mergekit.merge, "run_merge", "recipe_source"):
        return
    _mark("recipe_source")
    original_run_merge = mergekit.merge.run_merge

    def run_merge(merge_config, out_path, options, config_source=None):
        if merge_config.merge_method == METHOD_NAME and config_source:
            from layerseg_merge.plugin.recipe import check_recipe_source

            check_recipe_source(config_source)
        return original_run_merge(merge_config, out_path, options, config_source=config_source)

    mergekit.merge.run_merge = _tagged(run_merge, "recipe_source")
    run_yaml = sys.modules.get("mergekit.scripts.run_yaml")  # imported before us: it holds the original
    if run_yaml is not None:
        run_yaml.run_merge = mergekit.merge.run_merge
    _guard_validation()


def _guard_validation() -> None:
    """mergekit-yaml validates the loaded YAML before run_merge sees the text: an alias bomb placed in a field
    that fails validation makes pydantic render an exponentially long error (a hang). Walk a
    ``layerwise_seg`` recipe with a bound first."""
    from mergekit.config import MergeConfiguration

    if not _once(MergeConfiguration, "model_validate", "recipe_source"):
        return
    original = MergeConfiguration.model_validate.__func__

    def model_validate(cls, obj, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("merge_method") == METHOD_NAME:
            from layerseg_merge.engine.recipe_yaml import RecipeError, check_size

            try:
                check_size(obj)
            except RecipeError as error:
                raise RecipeError(f"recipe: {error}") from None
        return original(cls, obj, *args, **kwargs)

    MergeConfiguration.model_validate = classmethod(_tagged(model_validate, "recipe_source"))


def _install_execute() -> None:
    """mergekit 0.1.5 refuses differing integer buffers and tensors of other shapes before any method runs,
    and writes the dtype it promoted mixed inputs to: screen the inputs by the tensor's plan and write the
    anchor's dtype as loaded."""
    from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask

    if not _once(ExecuteMergeMethodTask, "execute", "kernel_inputs"):
        return
    _mark("kernel_inputs")
    original = ExecuteMergeMethodTask.execute

    def execute(self, tensors, **kwargs):
        if self.method_name != METHOD_NAME:
            return original(self, tensors, **kwargs)
        screened = screen_inputs(self, tensors)
        if not isinstance(screened, dict):
            return screened
        return anchor_dtype_result(self, screened, original(self, screened, **kwargs))

    ExecuteMergeMethodTask.execute = _tagged(execute, "kernel_inputs")


def _install_out_dtype_check() -> None:
    """mergekit 0.1.5 casts each written tensor to the recipe's ``out_dtype`` without looking: a finite value beyond
    the dtype's range is written as infinity. Refuse that for ``layerwise_seg`` tensors, where the cast happens (the
    writer's and the in-memory output tasks): they hold the producing task and the dtype, so the check needs no
    state of the merge and holds in the worker threads of ``--multi-gpu`` too."""
    from mergekit.io.tasks import ReturnTensor, SaveTensor

    for task_class, argument in ((SaveTensor, "tensor"), (ReturnTensor, "tensor")):
        if not _once(task_class, "execute", "out_dtype_check"):
            continue
        _mark("out_dtype_check")
        original = task_class.execute

        def execute(self, *args, _original=original, _argument=argument, **kwargs):
            name = getattr(self, "tensor_name", None) or self.weight_info.name
            if _argument in kwargs:
                kwargs[_argument] = checked_out_cast(self.tensor_task, kwargs[_argument], self.dtype, name)
            return _original(self, *args, **kwargs)

        task_class.execute = _tagged(execute, "out_dtype_check")
