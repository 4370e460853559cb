"""Stateless functions returning rx.Component."""
