"""The files a finished training run leaves in its folder (standard library only: the workflow reads it)."""

RUN_FILES = ("best.pt", "last.pt", "log.csv", "metrics.json")
