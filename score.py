"""Score new wells with a trained run: ``python score.py run=outputs/train/<date_time> data.path=<store>``."""
import hydra

from protocell.cli.score import run


@hydra.main(version_base="1.3", config_path="conf", config_name="score")
def main(cfg):
    return run(cfg)


if __name__ == "__main__":
    main()
