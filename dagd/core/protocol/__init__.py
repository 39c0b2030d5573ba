"""The WebSocket protocol, both directions, as data: no I/O, no trio.

    codes.py      ErrorCode, CloseCode, Role, and ProtocolError (an error code on its way out)
    requests.py   client -> server messages, one frozen class per `type`
    answers.py    server -> client answers and errors, one frozen class per `type`
    pairs.py      which answer answers which request (ANSWER_TO), and with_request_id
    converter.py  the one cattrs converter: camelCase, ISO times, strict structuring
    wire.py       JSON text: strict loads, compact dumps (orjson on the event path)
    events.py     the DAG event envelope and encode_event, the daemon's hot path
    codec.py      messages to text and back: encode, parse_client_message, parse_server_message

DAG events themselves are `dagd.core.events`. docs/protocol.md is the contract;
tests/core/test_protocol_docs.py holds it and docs/asyncapi.yaml to these classes. A new message:
a class in requests.py or answers.py, its wire name in the table there, its pair in pairs.py,
and its entry in both documents (the test says what is missing).
"""
