"""sesame-pi: a push-button voice appliance for the Raspberry Pi that talks to the Sesame agent."""

__version__ = "0.1.0"
