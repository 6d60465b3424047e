"""Helpers for the test suite: real throwaway servers and the JS SDK driver."""
