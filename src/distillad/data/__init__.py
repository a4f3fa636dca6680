"""Data loading: decode images/masks, list samples of known dataset layouts, torch Dataset."""

from .adapters import MPDD_CATEGORIES, btad_samples, mpdd_samples, mvtec3d_samples, visa_samples
from .cifar import CIFAR10_CLASSES, cifar10_samples
from .dataset import AnomalyDataset, image_to_tensor, resize_image
from .io import IMAGE_EXTENSIONS, decode_image, load_image, load_mask
from .layout import LAYOUTS, detect_layout, load_samples
from .root import find_data_root
from .samples import Sample, folder_samples, magnetic_tile_samples, mvtec_samples, train_val_split

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "MPDD_CATEGORIES",
    "AnomalyDataset",
    "Sample",
    "btad_samples",
    "cifar10_samples",
    "decode_image",
    "detect_layout",
    "find_data_root",
    "folder_samples",
    "image_to_tensor",
    "load_image",
    "load_mask",
    "load_samples",
    "magnetic_tile_samples",
    "mpdd_samples",
    "mvtec3d_samples",
    "mvtec_samples",
    "resize_image",
    "train_val_split",
    "visa_samples",
]
