"""Model cards and Hub uploads for the two repos of an experiment: `org/acte-<src>2<tgt>` and `org/tmt-<src>2<tgt>`."""

import os

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

TAGS = ["semantic-segmentation", "domain-adaptation", "vision-transformer", "tmt", "custom_code"]

TMT_USAGE = """\
```python
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

repo = "{repo}"
# The model is custom code: trust_remote_code=True downloads configuration_*.py and modeling_*.py from the repo
# (or `pip install tmt-hf` and `import tmt_hf`).
segmenter = pipeline("image-segmentation", model=repo, trust_remote_code=True)
masks = segmenter(Image.open("street.png"))  # [{{"label": "road", "score": None, "mask": <PIL.Image>}}, ...]

processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
model = AutoModelForSemanticSegmentation.from_pretrained(repo, trust_remote_code=True).eval()
inputs = processor(Image.open("street.png"), return_tensors="pt")
outputs = model(**inputs)                   # {acte_note}
outputs.focus_map                           # the focus map TMA used, on the patch grid
segmentation = processor.post_process_semantic_segmentation(outputs, target_sizes=[(1024, 2048)])[0]

# Your own focus map m in [0, 1] (any resolution) overrides ACTE's; AutoModel gives the bare TMTModel encoder.
outputs = model(**inputs, transferability_map=my_focus_map)
```"""

ACTE_USAGE = """\
```python
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

repo = "{repo}"
processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
acte = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
out = acte(**processor(Image.open("street.png"), return_tensors="pt"))
out.transferability      # (1, h, w) in [0, 1]: 1 where the region transfers well
out.focus_map            # (1, h, w) in [0, 1]: where TMA should attend
out.region_assignments   # (1, 9, h, w) soft assignment of each position to its 3x3 neighbouring regions
```

Attach it to a TMT segmenter (its weights are then saved inside the TMT checkpoint):

```python
from tmt_hf import ACTEModel, TMTForSemanticSegmentation
model = TMTForSemanticSegmentation.from_pretrained("path/to/source-model", acte=ACTEModel.from_pretrained(repo))
```"""

LIMITATIONS = """\
- TMT is custom code: the hosted HF Inference API (serverless widget) does not run custom-code models. Serve it with
  an Inference Endpoint (`handler.py`), a Gradio Space, or locally with `trust_remote_code=True`.
- Only the TMT paper's abstract and the ACTE clustering recurrence are public; ACTE's scoring and the TMA form are
  this project's reconstruction (see the tmt-hf README). On the project's generated benchmark, TMT has not been shown
  to beat vanilla fine-tuning at a converged budget.
- TMA needs `attn_implementation="sdpa"` or `"eager"`; flash and flex attention are not supported.
- Trained on {source} -> {target}; accuracy on other domains is not measured here."""


def _eval_results(metrics: dict, dataset_name: str, split: str) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="image-segmentation",
            task_name="Semantic Segmentation",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=key,
            metric_name=key,
            metric_value=round(float(value), 4),
        )
        for key, value in metrics.items()
    ]


def tmt_model_card(
    repo_id: str,
    *,
    source: str,
    target: str,
    metrics: dict,
    training: dict,
    acte_repo_id: str | None = None,
    with_acte: bool | None = None,
    base_model: str | None = None,
    widget_images: list[str] | None = None,
    description: str = "a TMT segmenter",
    split: str = "validation",
) -> ModelCard:
    """
    The card of a TMT (or vanilla fine-tuned) segmenter; `metrics` are measured target mIoU values in [0, 1];
    `description` completes "This model is ..." (a transfer method's `description`).
    `acte_repo_id` links the ACTE's Hub repo; `with_acte` (default: whether `acte_repo_id` is given) says that the
    checkpoint carries an ACTE, also for a local run with no Hub repo to link.
    """
    with_acte = bool(acte_repo_id) if with_acte is None else with_acte
    base_models = [m for m in (base_model, acte_repo_id) if m]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        license="apache-2.0",
        tags=TAGS,
        datasets=sorted({source, target}),
        base_model=base_models or None,
        model_name=repo_id,
        metrics=["mean_iou"],
        eval_results=_eval_results(metrics, target, split),
        widget=[{"src": image} for image in widget_images or []],
    )
    acte_line = ""
    if acte_repo_id:
        acte_line = f"Its frozen ACTE estimator is [{acte_repo_id}](https://huggingface.co/{acte_repo_id}) and its weights are included here."
    elif with_acte:
        acte_line = "Its frozen ACTE estimator's weights are included here."
    trained = "\n".join(f"- {key}: {value}" for key, value in training.items())
    results = "\n".join(f"| {key} | {100 * float(value):.2f} |" for key, value in metrics.items())
    content = f"""---
{data.to_yaml()}
---

# {repo_id}

This model is {description} (Zhang et al., *TMT: Cross-domain Semantic Segmentation with Region-adaptive Transferability
Estimation*, arXiv 2504.05774), adapted from **{source}** to **{target}** with `tmt-hf`.
{acte_line}

## Results (measured on {target}, {split} split)

| metric | value (%) |
|---|---|
{results}

## Training

{trained}

## Usage

{TMT_USAGE.format(repo=repo_id, acte_note="ACTE computes the focus map from the image" if with_acte else "no ACTE: unmodulated attention")}

## Limitations

{LIMITATIONS.format(source=source, target=target)}
"""
    return ModelCard(content)


def acte_model_card(repo_id: str, *, source: str, target: str, metrics: dict, training: dict) -> ModelCard:
    """The card of a standalone ACTE estimator; `metrics` are its measured held-out figures."""
    data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        tags=TAGS + ["transferability-estimation"],
        datasets=sorted({source, target}),
        model_name=repo_id,
    )
    trained = "\n".join(f"- {key}: {value}" for key, value in training.items())
    results = "\n".join(f"| {key} | {float(value):.4f} |" for key, value in metrics.items())
    content = f"""---
{data.to_yaml()}
---

# {repo_id}

ACTE, the Adaptive Cluster-based Transferability Estimator of TMT (arXiv 2504.05774), trained on **{source}**
(source) and **{target}** (target) images with `tmt-hf`. It clusters an image into
adaptive regions (the paper's differentiable clustering) and scores each region's transferability with a domain
discriminator (by default `t = min(1, (1 - p_target) / p_target)`, relative to the image's median region), gated
by semantic uncertainty into the focus map that TMT's attention uses. It is an estimator, not a segmenter: load it
with `AutoModel` (the `image-segmentation` pipeline does not apply to it).

## Measured

| metric | value |
|---|---|
{results}

## Training

{trained}

## Usage

{ACTE_USAGE.format(repo=repo_id)}

## Limitations

{LIMITATIONS.format(source=source, target=target)}
"""
    return ModelCard(content)


def push_folder(folder: str, repo_id: str, token: str | None = None, private: bool = False, message: str | None = None):
    """Creates `repo_id` if needed and uploads a `save_pretrained` folder (weights, code files, processor, card)."""
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ValueError(f"{folder!r} is not a save_pretrained folder: no config.json")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        commit_message=message or f"Upload {os.path.basename(os.path.normpath(folder))} with tmt-hf",
        ignore_patterns=["checkpoints/*", "*.tmp"],
    )


def acte_repo_id(tmt_repo_id: str) -> str:
    """The ACTE repo beside a TMT repo: `org/tmt-<src>2<tgt>` -> `org/acte-<src>2<tgt>`, else `<repo>-acte`."""
    owner, _, name = tmt_repo_id.rpartition("/")
    name = "acte-" + name[4:] if name.startswith("tmt-") else name + "-acte"
    return f"{owner}/{name}" if owner else name


def write_model_cards(
    output_dir: str,
    results: dict,
    *,
    source: str,
    target: str,
    classes: str,
    methods: list,
    repo_id: str,
    pushed: str | None,
    linked: bool,
    base_model: str | None,
    source_split: str,
    target_split: str,
    training: dict,
    widget_image,
) -> None:
    """
    A README.md model card in every stage folder of a run (`source`, `acte`, one per transfer method) with the metrics
    `results` holds (train.py's results.json). `methods` are the run's `tmt_hf.methods.TransferMethod`s; the one named
    `pushed` gets `repo_id`, the others `<repo_id>-<name>`; `linked` (the run pushes) makes the cards link each other's
    Hub repos and their widget image, which is saved beside each segmenter's card. `training` holds the steps
    (`source_steps`, `acte_steps`, `transfer_steps`), `batch_size`, `learning_rate` and the `source_model` folder.
    """
    acte_repo = acte_repo_id(repo_id)
    widget = lambda repo: [f"https://huggingface.co/{repo}/resolve/main/widget.png"] if linked else None  # noqa: E731
    source_only = round(results["source"]["target_val"]["mean_iou"], 4) if results.get("source") else None
    cards = {}
    if results.get("source") and "source_val" in results["source"]:
        source_repo = repo_id if pushed == "source" else f"{repo_id}-source"
        cards["source"] = tmt_model_card(
            source_repo,
            source=source,
            target=source,
            description="a source-only segmentation ViT (TMA idle), the starting point of every transfer method",
            metrics={"mean_iou": results["source"]["source_val"]["mean_iou"]},
            base_model=base_model,
            widget_images=widget(source_repo),
            split=source_split,
            training={
                "stage": "source",
                "data": source,
                "classes": classes,
                "steps": training["source_steps"],
                f"mIoU on {target} (source-only)": source_only,
            },
        )
    if results.get("acte"):
        metrics = {k: v for k, v in results["acte"].items() if k == "discriminator_accuracy"}
        acte_training = {
            **results["acte"].get("training", {}),
            "steps": training["acte_steps"],
            "auxiliary head's classes": classes,
            "batch size": training["batch_size"],
        }
        cards["acte"] = acte_model_card(
            acte_repo, source=source, target=target, metrics=metrics, training=acte_training
        )
    for method in methods:
        if not results.get(method.name):
            continue
        repo = repo_id if method.name == pushed else f"{repo_id}-{method.name}"
        cards[method.name] = tmt_model_card(
            repo,
            source=source,
            target=target,
            description=method.description,
            metrics={"mean_iou": results[method.name]["target_val"]["mean_iou"]},
            with_acte=method.trains_tma,
            acte_repo_id=acte_repo if method.trains_tma and linked else None,
            widget_images=widget(repo),
            split=target_split,
            training={
                "source model": training["source_model"],
                "classes": classes,
                "labelled target images": results[method.name]["labelled_target_images"],
                "steps": training["transfer_steps"],
                "batch size": training["batch_size"],
                "learning rate": training["learning_rate"],
                "source-only target mIoU": source_only,
            },
        )
    for name, card in cards.items():
        folder = os.path.join(output_dir, name)
        if os.path.isdir(folder):
            card.save(os.path.join(folder, "README.md"))
            if name != "acte":
                widget_image.save(os.path.join(folder, "widget.png"))  # a target example for the widget
