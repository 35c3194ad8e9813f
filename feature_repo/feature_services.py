"""Feature services: what each consumer reads. ``tip_policy_v1`` is exactly the policy's feature
records (data_contracts.features.UserContext + CandidateFeatures, less the flags the retrieval
computes); tests/feature_repo/test_feature_services.py keeps the two from drifting apart."""

from feast import FeatureService
from features import task_attributes, task_engagement, task_time, user_reactions, user_rhythm, user_time

tip_policy_v1 = FeatureService(
    name="tip_policy_v1",
    features=[
        user_reactions[
            [
                "reactions_1d",
                "reactions_7d",
                "reactions_28d",
                "done_rate_1d",
                "done_rate_7d",
                "done_rate_28d",
                "snooze_rate_1d",
                "snooze_rate_7d",
                "snooze_rate_28d",
                "dismiss_rate_1d",
                "dismiss_rate_7d",
                "dismiss_rate_28d",
                "done_rate_28d_todoist_task",
                "done_rate_28d_llm_tip",
                "dismiss_rate_28d_todoist_task",
                "dismiss_rate_28d_llm_tip",
                "done_rate_28d_night",
                "done_rate_28d_morning",
                "done_rate_28d_afternoon",
                "done_rate_28d_evening",
            ]
        ],
        user_rhythm[["completions_per_day_28d", "usual_active_hour", "weekend_share_28d"]],
        user_time[["hour_of_day", "weekday", "hours_since_last_reaction"]],
        task_attributes[
            [
                "priority",
                "has_due_date",
                "has_due_time",
                "is_recurring",
                "has_deadline",
                "duration_minutes",
                "label_count",
                "content_length",
            ]
        ],
        task_engagement[["times_snoozed", "times_shown"]],
        task_time[["age_days", "days_to_deadline", "hours_until_due", "is_overdue"]],
    ],
    description="everything the tip policy reads for one user and each candidate task",
)
