"""The async lane on provider Batch APIs: gather opted-in requests, submit, poll, deliver."""
