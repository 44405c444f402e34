"""2.1.0's connection helpers, kept so that scripts written for them still run (deprecated).

    from django_remote_submission.wrapper.remote import RemoteWrapper   # DeprecationWarning
    with RemoteWrapper("hpc.example.org", "ada").connect(password="..."):
        ...

``RemoteWrapper`` (SSH) and ``LocalWrapper`` (this machine) keep 2.1.0's methods on top of
today's transports (``remote/``) and key helpers (``keys``). New code uses
``remote.open_transport`` and the tasks ``copy_key_to_server`` / ``delete_key_from_server``.
"""
