"""Typed run configuration: the schema (`schema`, `synthetic`), YAML loading and overrides
(`loading`) and the packaged recipes (`recipes`)."""

from tfseg.config.loading import apply_overrides, from_dict, load_config, save_config, to_dict
from tfseg.config.schema import (
    AsymmetricLossConfig,
    AugmentConfig,
    Config,
    DataConfig,
    ExportConfig,
    ModelConfig,
    PerceptualLossConfig,
    PreprocessConfig,
    SuperResolutionDataConfig,
    TfdsDataConfig,
    TrainConfig,
)
from tfseg.config.synthetic import SyntheticSpec

__all__ = ["AsymmetricLossConfig", "AugmentConfig", "Config", "DataConfig", "ExportConfig",
           "ModelConfig", "PerceptualLossConfig", "PreprocessConfig", "SuperResolutionDataConfig",
           "SyntheticSpec", "TfdsDataConfig", "TrainConfig", "apply_overrides", "from_dict", "load_config",
           "save_config", "to_dict"]
