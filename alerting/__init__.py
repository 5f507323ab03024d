"""Alarm engine, lifecycle, operator actions and notifications."""
