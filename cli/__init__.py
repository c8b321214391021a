"""The `rekisteri` command for staff and operators (see `rekisteri --help`)."""
