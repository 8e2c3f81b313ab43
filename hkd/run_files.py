"""The files a finished training run leaves in its folder, named once for the package and the workflow."""

RUN_FILES = ("best.pt", "last.pt", "log.csv", "metrics.json")
