"""Tasks: image-level and patch-level one-class problems. Each is one file whose ``PLUGIN``
description the catalog reads; ``TASKS`` imports a task's module when it is looked up."""

from deep_representation_one_class.tasks.base import TASKS, Evaluation, Task, Views

__all__ = ["TASKS", "Evaluation", "Task", "Views"]
