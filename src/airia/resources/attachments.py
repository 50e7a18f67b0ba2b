"""Attachments of a conversation, sync and async side by side.

``Conversations`` inherits these methods. Uploads stream: a path is opened and
read a chunk at a time while the request is sent, never whole into memory.
Each attachment has a signed, expiring ``url`` that needs no credentials;
``download_attachment`` streams it to a path or a file object. Uploads carry
an ``Idempotency-Key`` and are retried on transient failures when the body can
be sent again: a path is re-opened, bytes re-sent, a file object sought back to
where it was; a file object that cannot seek is not retried once read from.
"""

from __future__ import annotations

import base64
from typing import Literal, overload

from .._files import (
    CHUNK_SIZE,
    AsyncMultipartStream,
    Destination,
    FileInput,
    Multipart,
    MultipartStream,
    asave,
    boundary_for,
    prepare_upload,
    save,
)
from ..types.api.conversations import Attachment
from ._resource import AsyncAPIResource, SyncAPIResource, conversation_path, key_or_new

Source = Literal["user", "agent"]


def _base64_body(data: bytes, file_name: str, content_type: str, source: str) -> dict[str, str]:
    return {
        "base64Content": base64.b64encode(data).decode("ascii"),
        "fileName": file_name,
        "contentType": content_type,
        "source": source,
    }


def _url(url_or_attachment: str | Attachment) -> str:
    return url_or_attachment.url if isinstance(url_or_attachment, Attachment) else url_or_attachment


class Attachments(SyncAPIResource):
    """Upload files to a conversation, list them, download them."""

    def upload_attachment(
        self,
        conversation_id: str,
        file: FileInput,
        file_name: str | None = None,
        content_type: str | None = None,
        source: Source = "agent",
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Attachment:
        """Upload a file to the conversation as ``multipart/form-data``, streaming it.

        Args:
            conversation_id: The conversation.
            file: A path (``str`` or ``os.PathLike``), the bytes, or a binary
                file object (read from its current position to the end).
            file_name: Name to store; by default the path's or file object's
                name, else ``"file"``.
            content_type: MIME type; by default guessed from the name
                (``mimetypes``), else ``application/octet-stream``.
            source: Who produced it: ``"user"`` or ``"agent"``.
            correlation_id: Trace id sent as ``X-Correlation-ID``.
            idempotency_key: Sent as ``Idempotency-Key``; a fresh UUID4 per call if
                omitted. Pass your own to make a call safe to repeat yourself (after a
                crash, say): within 24 h the server answers the same key and request
                with the first response instead of acting again.

        Retried on transient failures with the same key when the bytes can be
        sent again: a path is re-opened, bytes are re-sent, a seekable file
        object is sought back to the position it had; one that cannot seek is
        not retried once its bytes have been read.

        Returns:
            The stored attachment, with its signed download ``url``.

        Raises:
            APIStatusError: 413 when the file is over the server's size limit
                (25 MiB unless configured otherwise).

        Example:
            ```python
            attachment = client.conversations.upload_attachment(
                "conversation_id", "report.pdf", source="user"
            )
            print(attachment.blob_id, attachment.url)
            ```
        """
        key = key_or_new(idempotency_key)
        upload = prepare_upload(file, file_name, content_type)
        try:
            body = Multipart(upload, {"source": source}, boundary=boundary_for(key))
            return self._client._request(
                "POST",
                conversation_path(conversation_id, "agent-attachments"),
                content=MultipartStream(body, upload),
                headers=body.headers,
                correlation_id=correlation_id,
                idempotency_key=key,
                cast_to=Attachment,
            )
        finally:
            upload.close()

    def upload_attachment_base64(
        self,
        conversation_id: str,
        data: bytes,
        file_name: str,
        content_type: str,
        source: Source = "agent",
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Attachment:
        """Upload bytes as base64 in a JSON body (for callers that cannot send multipart).

        The whole file is in memory and grows by a third on the wire; prefer
        ``upload_attachment`` for anything large.
        Sent with an ``Idempotency-Key`` (``idempotency_key``, else a fresh UUID4)
        and retried on transient failures like ``upload_attachment``.

        Example:
            ```python
            attachment = client.conversations.upload_attachment_base64(
                "conversation_id", b"hello", file_name="hello.txt", content_type="text/plain"
            )
            ```
        """
        return self._client._request(
            "POST",
            conversation_path(conversation_id, "agent-attachments", "base64"),
            json=_base64_body(data, file_name, content_type, source),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=Attachment,
        )

    def list_attachments(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> list[Attachment]:
        """The conversation's attachments, each with a freshly signed ``url``.

        Example:
            ```python
            for a in client.conversations.list_attachments("conversation_id"):
                print(a.file_name, a.size, a.source)
            ```
        """
        return self._client._request(
            "GET",
            conversation_path(conversation_id, "attachments"),
            correlation_id=correlation_id,
            cast_to=list[Attachment],
        )

    @overload
    def download_attachment(
        self,
        url_or_attachment: str | Attachment,
        destination: None = None,
        correlation_id: str | None = None,
    ) -> bytes: ...
    @overload
    def download_attachment(
        self,
        url_or_attachment: str | Attachment,
        destination: Destination,
        correlation_id: str | None = None,
    ) -> int: ...
    def download_attachment(
        self,
        url_or_attachment: str | Attachment,
        destination: Destination | None = None,
        correlation_id: str | None = None,
    ) -> bytes | int:
        """Download an attachment by its signed URL, streaming the body.

        The URL is its own authorization: the API key or token is sent only
        when the URL is on the client's base URL origin, never to another host.

        Args:
            url_or_attachment: An ``Attachment`` or its ``url``.
            destination: A path (written as ``<path>.part``, renamed when
                complete) or a writable binary file object; None to get the bytes.
            correlation_id: Trace id sent as ``X-Correlation-ID``.

        Returns:
            The bytes without a destination; else the number of bytes written.

        Raises:
            PermissionDeniedError: the URL expired or was altered (403); list
                the attachments again for a fresh one.

        Example:
            ```python
            attachment = client.conversations.list_attachments("conversation_id")[0]
            client.conversations.download_attachment(attachment, "report.pdf")
            data = client.conversations.download_attachment(attachment.url)
            ```
        """
        request = self._client._build_download_request(_url(url_or_attachment), correlation_id)
        with self._client._stream(request) as response:
            return save(response.iter_bytes(CHUNK_SIZE), destination)


class AsyncAttachments(AsyncAPIResource):
    """Async twin of ``Attachments``: same methods, awaited."""

    async def upload_attachment(
        self,
        conversation_id: str,
        file: FileInput,
        file_name: str | None = None,
        content_type: str | None = None,
        source: Source = "agent",
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Attachment:
        """Upload a file, streaming it (see ``Attachments.upload_attachment``).

        The file is read a chunk at a time in a worker thread, so the event
        loop is never blocked on disk; bytes are sent from memory.

        Example:
            ```python
            attachment = await client.conversations.upload_attachment(
                "conversation_id", "report.pdf"
            )
            ```
        """
        key = key_or_new(idempotency_key)
        upload = prepare_upload(file, file_name, content_type)
        try:
            body = Multipart(upload, {"source": source}, boundary=boundary_for(key))
            return await self._client._request(
                "POST",
                conversation_path(conversation_id, "agent-attachments"),
                content=AsyncMultipartStream(body, upload),
                headers=body.headers,
                correlation_id=correlation_id,
                idempotency_key=key,
                cast_to=Attachment,
            )
        finally:
            upload.close()

    async def upload_attachment_base64(
        self,
        conversation_id: str,
        data: bytes,
        file_name: str,
        content_type: str,
        source: Source = "agent",
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Attachment:
        """Upload bytes as base64 JSON (see ``Attachments.upload_attachment_base64``).

        Example:
            ```python
            await client.conversations.upload_attachment_base64(
                "conversation_id", b"hi", file_name="hi.txt", content_type="text/plain"
            )
            ```
        """
        return await self._client._request(
            "POST",
            conversation_path(conversation_id, "agent-attachments", "base64"),
            json=_base64_body(data, file_name, content_type, source),
            correlation_id=correlation_id,
            idempotency_key=key_or_new(idempotency_key),
            cast_to=Attachment,
        )

    async def list_attachments(
        self, conversation_id: str, correlation_id: str | None = None
    ) -> list[Attachment]:
        """The conversation's attachments (see ``Attachments.list_attachments``).

        Example:
            ```python
            attachments = await client.conversations.list_attachments("conversation_id")
            ```
        """
        return await self._client._request(
            "GET",
            conversation_path(conversation_id, "attachments"),
            correlation_id=correlation_id,
            cast_to=list[Attachment],
        )

    @overload
    async def download_attachment(
        self,
        url_or_attachment: str | Attachment,
        destination: None = None,
        correlation_id: str | None = None,
    ) -> bytes: ...
    @overload
    async def download_attachment(
        self,
        url_or_attachment: str | Attachment,
        destination: Destination,
        correlation_id: str | None = None,
    ) -> int: ...
    async def download_attachment(
        self,
        url_or_attachment: str | Attachment,
        destination: Destination | None = None,
        correlation_id: str | None = None,
    ) -> bytes | int:
        """Download by signed URL, streaming (see ``Attachments.download_attachment``).

        The body arrives through ``aiter_bytes``; writes to a file go through a
        worker thread.

        Example:
            ```python
            await client.conversations.download_attachment(attachment, "report.pdf")
            ```
        """
        request = self._client._build_download_request(_url(url_or_attachment), correlation_id)
        async with self._client._stream(request) as response:
            return await asave(response.aiter_bytes(CHUNK_SIZE), destination)
