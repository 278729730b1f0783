"""Gradio Space demo: upload a street image (or pick a generated example) and see, side by side, the colourised
segmentation, ACTE's focus-map overlay and ACTE's adaptive regions.

    python examples/app.py --model outputs/tmt-clear2night/tmt      # or TMT_MODEL=... python examples/app.py

The default model is the one `accelerate launch examples/train.py` writes. On a Space, put this file in the Space
repo as `app.py` and set TMT_MODEL to a Hub repo id (the model is loaded with trust_remote_code=True).
"""

import argparse
import os
import tempfile

import gradio as gr
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from tmt_hf.data import generate_scene
from tmt_hf.inference import pad_to_multiple, segment_image
from tmt_hf.visualize import colorize, draw_boundaries, heat_overlay, palette_of

DEFAULT_MODEL = os.environ.get("TMT_MODEL", "outputs/tmt-clear2night/tmt")


def example_images(folder: str) -> list[str]:
    """A few generated scenes, one per domain, saved as PNG for gr.Examples."""
    paths = []
    for index, domain in enumerate(("clear", "night", "rain", "fog", "autumn")):
        path = os.path.join(folder, f"{domain}.png")
        Image.fromarray(generate_scene(90_000 + index, domain)["image"]).save(path)
        paths.append(path)
    return paths


def build_demo(model_path: str) -> gr.Blocks:
    processor = AutoImageProcessor.from_pretrained(model_path, trust_remote_code=True)
    model = AutoModelForSemanticSegmentation.from_pretrained(model_path, trust_remote_code=True).eval()
    palette = palette_of(model.config.id2label)  # the colours of the model's label space

    def segment(image: Image.Image):
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        image = image.convert("RGB")
        segmentation, outputs = segment_image(processor, model, image)
        if outputs.focus_map is None or model.acte is None:
            return colorize(segmentation, palette), image, image
        pixels = pad_to_multiple(processor(image, return_tensors="pt")["pixel_values"], model.size_multiple)
        with torch.no_grad():
            assignments = model.acte(pixel_values=pixels).region_assignments
        regions = model.acte.hard_regions(assignments, model.acte.config.cell_size)[0].numpy()
        focus = heat_overlay(image, outputs.focus_map[0].numpy())
        return colorize(segmentation, palette), focus, draw_boundaries(image, regions)

    with gr.Blocks(title="TMT: transferability-aware segmentation") as demo:
        gr.Markdown(
            f"# TMT cross-domain segmentation\nModel: `{model_path}`. ACTE scores how well each adaptive region "
            "transfers from the source domain; TMA focuses attention where transfer is hard."
        )
        with gr.Row():
            image = gr.Image(type="pil", label="street image", elem_id="input-image")
        button = gr.Button("Segment", variant="primary", elem_id="segment-button")
        with gr.Row():
            outputs = [
                gr.Image(type="pil", label="segmentation", elem_id="segmentation"),
                gr.Image(type="pil", label="focus map (ACTE)", elem_id="focus-map"),
                gr.Image(type="pil", label="ACTE adaptive regions", elem_id="regions"),
            ]
        gr.Examples(example_images(tempfile.mkdtemp(prefix="tmt-examples-")), inputs=image)
        button.click(segment, inputs=image, outputs=outputs)
    return demo


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="TMT folder or Hub id (env TMT_MODEL)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    args = parser.parse_args()
    if not os.path.isdir(args.model) and args.model.count("/") != 1:
        raise SystemExit(f"Model {args.model!r} not found: run `accelerate launch examples/train.py` or pass --model")
    build_demo(args.model).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
