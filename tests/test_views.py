import torch

from sslflow.config import Augment
from sslflow.views import TwoViews, augment, normalize


def test_views_keep_shape_dtype_and_range():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    v0, v1 = TwoViews(augment(Augment(), (28, 28)))(image)
    for v in (v0, v1):
        assert v.shape == (1, 28, 28) and v.dtype == torch.float32
        assert v.min() >= -1.0 and v.max() <= 1.0
    assert not torch.equal(v0, v1)  # two independent draws


def test_rgb_and_non_square_images():
    image = torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8)
    assert augment(Augment(), (32, 40))(image).shape == (3, 32, 40)


def test_normalize_maps_uint8_range_to_unit_interval():
    x = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    assert normalize()(x).tolist() == [[[-1.0, 1.0]]]


def test_no_augmentation_is_identity_after_normalize():
    still = Augment(crop_scale=(1.0, 1.0), rotation=0, translate=0, shear=0, brightness=0, contrast=0, blur_p=0, erase_p=0)
    image = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    assert torch.allclose(augment(still, (8, 8))(image), normalize()(image), atol=1e-6)
