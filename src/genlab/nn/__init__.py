"""Building blocks shared by several model families (and only those)."""
