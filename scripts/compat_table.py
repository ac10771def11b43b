"""Print the activation × loss × task compatibility table as Markdown (as in README.md)."""

from xentlab.compat import markdown

if __name__ == "__main__":
    print(markdown(), end="")
