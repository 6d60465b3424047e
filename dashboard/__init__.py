"""The web dashboard for users and operators (see DESIGN.md)."""
