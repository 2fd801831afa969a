from .level_sorted_roi_extractor import LevelSortedRoIExtractor  # noqa: F401
