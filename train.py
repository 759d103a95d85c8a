"""Train a ProtoPNet: ``python train.py backbone=vgg11 mask=on`` (see conf/train.yaml)."""

from protocell.cli.entry import train

if __name__ == "__main__":
    train()
