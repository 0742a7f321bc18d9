from pathlib import Path

import pytest
import yaml

from sslflow import config
from sslflow.errors import SslflowError
from sslflow.text.config import Text

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, tree) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_repo_params_are_valid():
    for section, model in [
        ("base", config.Base), ("fetch", config.Fetch), ("preprocess", config.Preprocess),
        ("pretrain", config.Pretrain), ("finetune", config.Finetune), ("evaluate", config.Evaluate),
        ("registry", config.Registry), ("promote", config.Promote), ("sweep", config.Sweep),
    ]:
        config.load(REPO / "params.yaml", section, model)


@pytest.mark.parametrize(
    "tree,section,model,needle",
    [
        ({"pretrain": {"epochz": 3}}, "pretrain", config.Pretrain, "pretrain.epochz"),
        ({"finetune": {"labels_per_class": "5"}}, "finetune", config.Finetune, "finetune.labels_per_class"),
        ({"pretrain": {"optim": {"lr": "fast"}}}, "pretrain", config.Pretrain, "pretrain.optim.lr"),
        ({"fetch": {"source": "mnist-from-mars"}}, "fetch", config.Fetch, "fetch.source"),
        ({"base": {"seed": 1.5}}, "base", config.Base, "base.seed"),
        ({"finetune": {"labels_per_class": 5, "label_fraction": 0.1}}, "finetune", config.Finetune, "at most one"),
        ({"registry": {"model_names": {"audio": "x"}}}, "registry", config.Registry, "registry.model_names.audio"),
        ({"registry": {"model_names": {"image": ""}}}, "registry", config.Registry, "registry.model_names.image"),
        ({"text": {"task": "token-classification", "finetune": {"method": "fixmatch"}}}, "text", Text,
         "'text.finetune.method' is fixmatch, but text.task is token-classification"),
        ({"text": {"finetune": {"word_classes": 1}}}, "text", Text, "text.finetune.word_classes"),
    ],
)
def test_bad_params_name_the_key(tmp_path, tree, section, model, needle):
    with pytest.raises(SslflowError, match=needle.replace(".", r"\.")) as err:
        config.load(_write(tmp_path, tree), section, model)
    assert "\n" not in str(err.value)


def test_pairs_come_from_yaml_lists(tmp_path):
    path = _write(tmp_path, {"pretrain": {"augment": {"crop_scale": [0.3, 1.0]}}})
    cfg = config.load(path, "pretrain", config.Pretrain)
    assert cfg.augment.crop_scale == (0.3, 1.0)


def test_missing_params_file(tmp_path):
    with pytest.raises(SslflowError, match="params file not found"):
        config.load(tmp_path / "nope.yaml", "base", config.Base)


def test_each_track_registers_under_its_own_name(tmp_path):
    names = config.load(REPO / "params.yaml", "registry", config.Registry).model_names
    assert len(set(names.values())) == len(names) == 3  # image, documents, NER: never one another's champion
    path = _write(tmp_path, {"registry": {"model_names": {"image": "digits"}}})
    mine = config.load(path, "registry", config.Registry)
    assert mine.model_name("image") == "digits" and mine.model_name("token-classification") == "sslflow-ner"
