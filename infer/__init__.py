"""unetlite.infer: segment images and video with an ONNX U-Net. Needs no TensorFlow."""
from .contract import ModelContract
from .imageio import ImageReadError, read_image
from .preprocess import prepare, trimap_to_mask
from .postprocess import Segmentation, postprocess
from .session import BackendError, ModelLoadError, Segmenter, default_model_path

__all__ = ["ModelContract", "ImageReadError", "read_image", "prepare", "trimap_to_mask",
           "BackendError", "ModelLoadError", "Segmentation", "postprocess", "Segmenter", "default_model_path"]
