"""Raw plate images → crop store: ``python prepare.py input=… plate_map=…`` (see conf/prepare.yaml)."""
import hydra

from protocell.cli.prepare import run


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg):
    return run(cfg)


if __name__ == "__main__":
    main()
