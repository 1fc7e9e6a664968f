"""Declarative Automation for users who prefer it to the upload sensor's run requests.

`eager()` re-runs an asset whenever an upstream materializes, even to identical data. Here an
asset runs when it is missing or when an upstream's *data version* changed, so re-running an
unchanged shard (every key reused, same data version) sets nothing else in motion.
"""

from collections.abc import Sequence

from dagster import AssetsDefinition, AutomationCondition, map_asset_specs


def on_data_version_change() -> AutomationCondition:
    conditions = AutomationCondition
    return (
        conditions.in_latest_time_window()
        & (conditions.newly_missing()
           | conditions.any_deps_match(conditions.data_version_changed())).since_last_handled()
        & ~conditions.any_deps_missing()
        & ~conditions.any_deps_in_progress()
        & ~conditions.in_progress()
    ).with_label("on_data_version_change")


def with_automation(assets: Sequence[AssetsDefinition]) -> Sequence[AssetsDefinition]:
    """The same assets with `on_data_version_change` on every materializable one."""
    condition = on_data_version_change()
    return map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=condition),
                           assets)
