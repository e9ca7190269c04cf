"""Core: state, controller, schedules, scopes, registry."""
