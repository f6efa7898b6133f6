"""Which rule each branch of a dual-branch (end-to-end) head trains with.

A head with a one-to-one branch (YOLOv10's consistent dual assignment, YOLO26's end-to-end head:
``DecoupledHead(one2one=True, one2one_loss=...)``) trains two sets of branches, each by its own loss
pipeline and assigner: ``model.head.loss.assigner`` (the one-to-many branch) and
``model.head.one2one_loss.assigner`` (the one-to-one branch, read at inference without NMS). The
one-to-one branch must stay one-to-one -- at most one positive per GT -- or NMS-free inference reads
duplicates. What swaps a rule names the branch (``--branch`` of the comparison and ablation tools,
``schedule.assigner_switches``):

* ``one2many`` (the default): the named rule trains the one-to-many branch; the one-to-one branch
  keeps the config's rule.
* ``one2one``: the named rule trains the one-to-one branch; a rule that can give a GT more than one
  positive is refused (:func:`one_to_one_problem`).
* ``both``: ``RULE`` trains the one-to-many branch and its one-to-one form the other
  (:func:`one_to_one_call`: the same rule and metric at ``topk=1``, YOLOv10's consistent matching;
  a rule that is one-to-one already is kept); ``O2M:O2O`` (e.g. ``tal-ultralytics:tal-e2e-ultralytics``)
  names each branch's rule.

``config`` stands for the config's own rule of a branch, as elsewhere in the tools.

``schedule.assigner_switches`` entries: ``(epoch, RULE)`` switches the one-to-many branch (the only
branch of most heads); ``(epoch, dict(one2one=RULE))`` the one-to-one branch, ``(epoch,
dict(one2many=A, one2one=B))`` both. Each branch keeps its rule until an entry names that branch
again (:func:`branch_switches`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detkit.assigners.min_pos import MinPositives
from detkit.assigners.presets import expand_preset
from detkit.assigners.task_aligned import TaskAlignedAssigner
from detkit.errors import ConfigError
from detkit.lazy import TARGET_KEY, L, call_text
from detkit.schema import target_product

__all__ = ["ASSIGNER_KEYS", "BRANCHES", "BRANCH_CHOICES", "BranchRules", "branch_rules", "branch_switches",
           "has_one2one", "one_to_one_call", "one_to_one_problem", "set_branch_assigner", "split_pair", "switch_rules"]

BRANCHES = ("one2many", "one2one")
BRANCH_CHOICES = (*BRANCHES, "both")
# The config key of each branch's rule.
ASSIGNER_KEYS = {"one2many": "model.head.loss.assigner", "one2one": "model.head.one2one_loss.assigner"}
CONFIG_RULE = "config"  # the config's own rule of a branch


@dataclass(frozen=True)
class BranchRules:
    """What one ``--assigners`` entry gives each branch: a rule name (a preset, a call text, or
    ``"config"``), or None where the branch keeps the config's rule untouched."""

    one2many: str | None
    one2one: str | None

    def items(self) -> list[tuple[str, str]]:
        """``[(branch, rule), ...]`` of the branches this entry sets, one-to-many first."""
        return [(b, r) for b, r in (("one2many", self.one2many), ("one2one", self.one2one)) if r is not None]

    def overrides(self) -> list[str]:
        """Overrides that give each set branch exactly its rule (``config`` needs none): ``key=None``
        first, so that a call of the config's own class replaces it whole instead of merging into it
        (``tal`` over ``tal-ultralytics`` is the plain rule, not one with Ultralytics' extras)."""
        return [o for b, r in self.items() if r != CONFIG_RULE
                for o in (f"{ASSIGNER_KEYS[b]}=None", f"{ASSIGNER_KEYS[b]}={call_text_of(r)}")]


def call_text_of(name: str) -> str:
    """A preset's call as text, or ``name`` itself when it is not a preset (a call text)."""
    node = expand_preset(name)
    return call_text(node) if isinstance(node, Mapping) and TARGET_KEY in node else name


def split_pair(entry: str) -> tuple[str, str] | None:
    """``"O2M:O2O"`` -> ``("O2M", "O2O")``, split at the one ``:`` outside brackets and quotes; None
    when there is none (a single rule).

    Raises:
        ConfigError: more than one such ``:``, or an empty side.
    """
    depth, quote, cuts = 0, "", []
    for i, ch in enumerate(entry):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == ":" and depth == 0:
            cuts.append(i)
    if not cuts:
        return None
    left, right = entry[:cuts[0]].strip(), entry[cuts[0] + 1:].strip()
    if len(cuts) > 1 or not left or not right:
        raise ConfigError(f"--assigners {entry!r}: write a pair of rules as ONE2MANY:ONE2ONE "
                          "(e.g. tal-ultralytics:tal-e2e-ultralytics)")
    return left, right


def branch_rules(entry: str, branch: str) -> BranchRules:
    """The rule each branch gets from one ``--assigners`` entry under ``--branch branch`` (see the
    module docstring); the one-to-one side is not checked here (:func:`one_to_one_problem` does).

    Raises:
        ConfigError: an unknown branch, a pair without ``--branch both``, or (``both`` with one
            rule) a rule with no one-to-one form.
    """
    if branch not in BRANCH_CHOICES:
        raise ConfigError(f"--branch {branch!r}: expected one of {', '.join(BRANCH_CHOICES)}")
    pair = split_pair(entry)
    if pair is not None:
        if branch != "both":
            raise ConfigError(f"--assigners {entry!r}: a pair ONE2MANY:ONE2ONE sets both branches; "
                              f"add --branch both (now {branch})")
        return BranchRules(*pair)
    if branch == "one2many":
        return BranchRules(entry, None)
    if branch == "one2one":
        return BranchRules(None, entry)
    return BranchRules(entry, CONFIG_RULE if entry == CONFIG_RULE else one_to_one_call(entry))


def one_to_one_call(name: str) -> str:
    """The one-to-one form of a rule as call text: the rule itself when it is one-to-one already,
    else the task-aligned rule at ``topk=1`` (YOLOv10's consistent matching: the same metric, each GT
    keeps its best prior); ``MinPositives`` around such a rule keeps it (at ``min_pos_per_gt=1``).

    Raises:
        ConfigError: a rule without that form (ATSS, max-IoU, SimOTA, ...: name the one-to-one
            branch's rule with a pair ``O2M:O2O``).
    """
    node = expand_preset(name)
    if not (isinstance(node, Mapping) and TARGET_KEY in node):
        raise ConfigError(f"--assigners {name!r}: neither a preset nor a call of an assigner")
    one = _one_to_one_node(node)
    if one is None:
        raise ConfigError(f"--assigners {name!r} with --branch both: the one-to-one branch takes the rule at "
                          f"topk=1, which only a task-aligned rule has; name that branch's rule with a pair "
                          f"{name}:RULE (e.g. {name}:tal-e2e-ultralytics)")
    return call_text(one)


def _one_to_one_node(node: Mapping[str, Any]) -> Any:
    """``node`` (a lazy call of an assigner) made one-to-one, or None when it has no such form."""
    product = target_product(node[TARGET_KEY])
    args = {k: v for k, v in node.items() if k != TARGET_KEY}
    if product is not None and issubclass(product, TaskAlignedAssigner):
        if args.get("topk2") == 1:
            return node
        return L(node[TARGET_KEY])(**{**args, "topk": 1})
    if product is not None and issubclass(product, MinPositives) and args.get("min_pos_per_gt", 1) == 1:
        inner = args.get("assigner")
        inner_one = _one_to_one_node(inner) if isinstance(inner, Mapping) and TARGET_KEY in inner else None
        return None if inner_one is None else L(node[TARGET_KEY])(**{**args, "assigner": inner_one})
    return None


def one_to_one_problem(assigner: Any) -> str | None:
    """Why ``assigner`` (built) cannot train a one-to-one branch, or None when it can.

    One-to-one: a task-aligned rule at ``topk=1`` or with ``topk2=1``, or ``MinPositives`` at
    ``min_pos_per_gt=1`` around one (it takes only free priors). detkit's other rules give a GT
    several positives by design. A rule from outside detkit is taken on trust.
    """
    if isinstance(assigner, TaskAlignedAssigner):
        topk, topk2 = assigner.topk, getattr(assigner, "topk2", None)
        if topk == 1 or topk2 == 1:
            return None
        return (f"{type(assigner).__name__}(topk={topk}{'' if topk2 is None else f', topk2={topk2}'}) "
                f"gives a GT up to {topk2 or topk} positives; a one-to-one branch needs topk=1 or topk2=1")
    if isinstance(assigner, MinPositives):
        inner = one_to_one_problem(assigner.assigner)
        if inner is not None:
            return inner
        if assigner.min_pos_per_gt != 1:
            return f"MinPositives(min_pos_per_gt={assigner.min_pos_per_gt}) forces several positives per GT"
        return None
    if type(assigner).__module__.startswith("detkit."):
        return f"{type(assigner).__name__} gives a GT several positives (a one-to-many rule)"
    return None


def has_one2one(head: Mapping[str, Any] | None) -> bool:
    """Whether a config's ``model.head`` section builds a trained one-to-one branch."""
    return bool(head and head.get("one2one") and head.get("one2one_loss") is not None)


# ----- schedule.assigner_switches ------------------------------------------------------------------


def switch_rules(component: Any) -> dict[str, Any] | None:
    """The branches a ``schedule.assigner_switches`` entry's component switches: ``{branch: rule}``
    for a mapping of branch names (not a lazy call), None for a bare rule (the one-to-many branch)."""
    if isinstance(component, Mapping) and TARGET_KEY not in component:
        return dict(component)
    return None


def branch_switches(schedule: Sequence[tuple[int, Any]], branch: str) -> list[tuple[int, Any]]:
    """The ``(epoch, rule)`` entries of ``schedule`` that switch ``branch``, in order."""
    out = []
    for epoch, component in schedule:
        rules = switch_rules(component)
        if rules is None and branch == "one2many":
            out.append((epoch, component))
        elif rules is not None and branch in rules:
            out.append((epoch, rules[branch]))
    return out


def set_branch_assigner(head: Any, branch: str, assigner: Any) -> None:
    """Swap the assigner of ``head``'s ``branch`` (``head.assigner`` for the one-to-many branch, which
    checks the pair with the pipeline's ``cls_target``; the one-to-one pipeline's, kept one-to-one).

    Raises:
        ValueError: the head has no such branch, or the rule would make the one-to-one branch one-to-many.
    """
    if branch == "one2many":
        head.assigner = assigner
        return
    pipeline = getattr(head, "one2one_pipeline", None)
    if branch != "one2one" or pipeline is None:
        raise ValueError(f"{type(head).__name__} has no trained {branch} branch to switch the assigner of")
    problem = one_to_one_problem(assigner)
    if problem is not None:
        raise ValueError(f"the one-to-one branch must stay one-to-one: {problem}")
    check = getattr(type(pipeline), "check_config_arguments", None)
    if check is not None:
        check({"cls_target": getattr(pipeline, "cls_target", None), "assigner": assigner}, "head.one2one_loss")
    pipeline.assigner = assigner
