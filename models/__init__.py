# Before anything here loads pyarrow: Arrow allocator settings (smescore/__init__.py).
import smescore  # noqa: F401
