"""Explain a trained run: ``python explain.py run=outputs/train/<date_time>``."""
import hydra

from protocell.cli.explain import run


@hydra.main(version_base="1.3", config_path="conf", config_name="explain")
def main(cfg):
    return run(cfg)


if __name__ == "__main__":
    main()
