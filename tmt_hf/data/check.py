"""
`tmt-hf check-data`: a download (or a local dataset) checked split by split before training, with the same reader and
the same label checks as `load_domain`, but every problem reported rather than the first raised.
"""

from collections import Counter
from dataclasses import dataclass, field

import datasets

from .label_spaces import IGNORE_INDEX, UNPLACED, get_label_space
from .readers import SPLITS, MissingSplit
from .registry import (
    BENCHMARKS,
    SPLIT_ALIASES,
    DataDir,
    LabelRules,
    data_dir_for,
    image_header,
    label_rules,
    present_ids,
    read_split,
)

SHOWN_PROBLEMS = 20  # per split; the rest are counted


@dataclass
class SplitCheck:
    """What `check_data` found in one split: its frames and groups, the raw label ids met, and each problem."""

    split: str
    found: bool = True
    labelled: bool = True
    frames: int = 0
    groups: int = 0
    ids: Counter = field(default_factory=Counter)  # raw label id -> label files holding it
    problems: list[str] = field(default_factory=list)
    rules: LabelRules | None = None


def check_data(
    name_or_path: str, data_dir: DataDir = None, split: str | None = None, label_space: str | None = None
) -> list[SplitCheck]:
    """
    Checks every split of a registered benchmark's download (or of a local or Hub dataset), or only `split`: unpaired
    images and labels, two kinds of label files mixed, unreadable files, colour-coded labels, label/image size
    mismatches, and label ids outside the dataset's set or without a class in `label_space`. Returns a `SplitCheck`
    per split; a split that is not there is a problem only when it was asked for.
    """
    benchmark = BENCHMARKS.get(name_or_path.lower())
    layout = benchmark.layout if benchmark is not None else None
    if layout is not None:
        folder = data_dir_for(benchmark.name, data_dir)
        if folder is None:
            problem = f"{name_or_path} is checked in its download: pass --data_dir ({layout.expected})"
            return [SplitCheck(split or "all", found=False, problems=[problem])]
        try:
            layout.find_root(folder)
        except ValueError as error:
            return [SplitCheck(split or "all", found=False, problems=[str(error)])]
    checks = []
    for split_name in [SPLIT_ALIASES.get(split, split)] if split else list(layout.splits if layout else SPLITS):
        labelled = layout is None or split_name in layout.labelled_splits
        check = SplitCheck(split_name, labelled=labelled)
        checks.append(check)
        try:
            dataset, frames = read_split(name_or_path, split_name, data_dir=data_dir, with_labels=labelled)
        except MissingSplit as error:
            check.found = False
            if split:
                check.problems.append(str(error))
            continue
        except ValueError as error:
            check.problems.append(str(error))
            continue
        if frames is not None:
            check.problems += frames.problems()
            check.groups = len(set(frames.groups))
        check.rules = label_rules(name_or_path, frames, label_space=label_space)
        check_files(dataset, check, name_or_path)
    return checks


def check_files(dataset: datasets.Dataset, check: SplitCheck, name: str) -> None:
    """Reads each row's image header and label, counting label ids and recording problems."""
    rules = check.rules
    image_column, label_column = rules.columns
    columns = [image_column, *([label_column] if check.labelled else [])]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        check.problems.append(f"Dataset {name!r} has no column(s) {missing}; columns found: {dataset.column_names}")
        return
    dataset = dataset.select_columns(columns)
    for column in columns:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    check.frames = len(dataset)
    for index, row in enumerate(dataset):
        try:
            size, _ = image_header(row[image_column], name, image_column, index)
            if check.labelled:
                _, ids = rules.read(row[label_column], index, row[image_column], size)
                present = present_ids(ids)
                check.ids.update(present.tolist())
                rules.check(present, rules.where(index, row[label_column]))
        except ValueError as error:
            check.problems.append(str(error))


def describe_id(raw_id: int, rules: LabelRules) -> tuple[str, str]:
    """A raw label id's name and what it maps to in the checked label space."""
    encoding = rules.encoding
    names = encoding.names if encoding is not None else rules.native.classes
    name = names[raw_id] if 0 <= raw_id < len(names) else "ignored" if raw_id == IGNORE_INDEX else "?"
    if encoding is not None and encoding.raw_ids is not None and raw_id not in encoding.raw_ids:
        return name, "not in the dataset's label set"
    native = raw_id
    if rules.mapping is not None:
        native = int(rules.mapping[raw_id]) if 0 <= raw_id < len(rules.mapping) else -1
    if native == IGNORE_INDEX:
        return name, "ignored (255)"
    if not 0 <= native < len(rules.native.classes):
        return name, f"not {rules.native.id_name}"
    placed = int(rules.to_space[native])
    if placed == UNPLACED:
        return name, f"no class in the {rules.space} space"
    classes = get_label_space(rules.space).classes
    return name, "ignored (255)" if placed == IGNORE_INDEX else f"{placed} {classes[placed]}"


def format_report(name: str, checks: list[SplitCheck]) -> str:
    """The report `tmt-hf check-data` prints: per split its counts, the label ids found and the problems."""
    lines = []
    for check in checks:
        if not check.found and not check.problems:
            lines.append(f"{check.split}: not found")
            continue
        labels = "" if check.labelled else " (images only: this split has no labels)"
        groups = f", {check.groups} groups" if check.groups else ""
        lines.append(f"{check.split}: {check.frames} frames{groups}{labels}")
        if check.ids:
            encoding = check.rules.encoding
            what = f"{encoding.description}" if encoding is not None else f"{check.rules.native.id_name} expected"
            lines.append(f"  label ids found ({what}) -> {check.rules.space}:")
            for raw_id in sorted(check.ids):
                label, mapped = describe_id(raw_id, check.rules)
                lines.append(f"  {raw_id:>5} {label:<36} {check.ids[raw_id]:>7} files -> {mapped}")
        for problem in check.problems[:SHOWN_PROBLEMS]:
            lines.append(f"  PROBLEM: {problem}")
        if len(check.problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(check.problems) - SHOWN_PROBLEMS} more problems")
    problems = sum(len(check.problems) for check in checks)
    lines.append(f"{name}: {problems} problem(s)" if problems else f"{name}: no problems found")
    return "\n".join(lines)
