"""Tasks: image-level and patch-level one-class problems; importing registers them in TASKS."""

from deep_representation_one_class.tasks import image, patches  # noqa: F401  (registration)
from deep_representation_one_class.tasks.base import TASKS, Evaluation, Task, Views

__all__ = ["TASKS", "Evaluation", "Task", "Views"]
