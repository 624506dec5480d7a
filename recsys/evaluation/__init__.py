"""Offline evaluation: ranking metrics and running the serving pipeline in-process over test users."""
