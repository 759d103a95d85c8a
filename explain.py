"""Explain a trained run: ``python explain.py run=outputs/train/<date_time>``."""

from protocell.cli.entry import explain

if __name__ == "__main__":
    explain()
