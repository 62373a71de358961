"""The project's exceptions: one root, and messages that say what happened and what to do."""

from __future__ import annotations


class PeakrouteError(Exception):
    """Root of every error peakroute raises on purpose."""


class SettingsError(PeakrouteError):
    """A PEAKROUTE_* setting (or the stack file) has a value that cannot be used."""


class StackError(PeakrouteError):
    """The embedded stack (broker + Redis) could not be started, reached or stopped."""


class MissingDependencyError(StackError):
    """A program the embedded stack needs is not installed."""


class RoutingStoreError(PeakrouteError):
    """Redis answered a routing script with something the router does not understand."""


class PolicyError(PeakrouteError):
    """The routing policy file is unreadable or invalid (the message names file, key and fix)."""
