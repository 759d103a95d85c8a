"""Train a ProtoPNet: ``python train.py backbone=vgg11 mask=on`` (see conf/train.yaml)."""
import hydra

from protocell.cli.train import run
from protocell.config import register

register()   # the typed schema conf/train.yaml starts from


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg):
    return run(cfg)


if __name__ == "__main__":
    main()
