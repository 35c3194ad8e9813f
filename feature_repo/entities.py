"""Entities: a user of oO and a Todoist task (task ids are global in Todoist)."""

from feast import Entity, ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="an oO user id")
task = Entity(name="task", join_keys=["task_id"], value_type=ValueType.STRING, description="a Todoist task id")
