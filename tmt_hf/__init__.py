"""tmt-hf: TMT cross-domain semantic segmentation (ACTE + TMA) as Hugging Face Transformers models."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_acte import ACTEConfig
from .configuration_tmt import CITYSCAPES_CLASSES, TMT_PRESETS, TMTConfig
from .image_processing_tmt import TMTImageProcessor
from .modeling_acte import ACTEModel, ACTEOutput
from .modeling_tmt import TMTForSemanticSegmentation, TMTModel, TMTSemanticSegmenterOutput
from .pipeline_acte import TransferabilityEstimationPipeline

__version__ = "0.1.0"

AutoConfig.register("tmt", TMTConfig, exist_ok=True)
AutoConfig.register("acte", ACTEConfig, exist_ok=True)
AutoModel.register(TMTConfig, TMTModel, exist_ok=True)
AutoModel.register(ACTEConfig, ACTEModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(TMTConfig, TMTForSemanticSegmentation, exist_ok=True)
AutoImageProcessor.register(TMTConfig, image_processor_classes={"pil": TMTImageProcessor}, exist_ok=True)
AutoImageProcessor.register(ACTEConfig, image_processor_classes={"pil": TMTImageProcessor}, exist_ok=True)

# ACTE is an estimator: its pipeline task returns its maps (the image-segmentation pipeline is for the segmenter).
PIPELINE_REGISTRY.register_pipeline(
    "transferability-estimation", pipeline_class=TransferabilityEstimationPipeline, pt_model=AutoModel, type="image"
)

# Every save_pretrained writes the code files and `auto_map`, so that a saved directory (or Hub repo) loads with
# trust_remote_code=True where tmt_hf is not installed.
TMTConfig.register_for_auto_class()
ACTEConfig.register_for_auto_class()
TMTModel.register_for_auto_class("AutoModel")
ACTEModel.register_for_auto_class("AutoModel")
TMTForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
TMTImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "ACTEConfig",
    "ACTEModel",
    "ACTEOutput",
    "CITYSCAPES_CLASSES",
    "TMT_PRESETS",
    "TMTConfig",
    "TMTForSemanticSegmentation",
    "TMTImageProcessor",
    "TMTModel",
    "TMTSemanticSegmenterOutput",
    "TransferabilityEstimationPipeline",
]
