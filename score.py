"""Score new wells with a trained run: ``python score.py run=outputs/train/<date_time> data.path=<store>``."""

from protocell.cli.entry import score

if __name__ == "__main__":
    score()
