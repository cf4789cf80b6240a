"""Bridges from other simulators to the plugin's client API (perception.client): each one builds a
scene in its simulator, renders the rig's cameras there and sends the frame sets through a client
Session like any user's code would. Nothing here is a special path into the fusion node."""
