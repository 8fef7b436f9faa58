"""The S3 gateway driven by real S3 clients (boto3, aws-cli) over a dev cluster of real servers.

Run by scripts/test-s3, which starts the cluster and `dogfs-s3` and sets DOGFS_S3_URL and the
AWS_* variables (an admin key; a read-only key is TESTREADER / test-reader-secret). Every test
compares bytes read back with bytes written, and every error body must parse as S3's XML.
"""

import hashlib
import os
import random
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

URL = os.environ["DOGFS_S3_URL"]
WORK = os.environ["DOGFS_S3_WORK"]
MIB = 1 << 20


def client(key="TESTADMIN", secret="test-admin-secret", **config):
    return boto3.client(
        "s3",
        endpoint_url=URL,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2},
            **config,
        ),
    )


def data(seed, size):
    rng = random.Random(seed)
    return rng.randbytes(size)


def error_code(e):
    return e.response.get("Error", {}).get("Code")


def raw(method, url, body=None, headers=None):
    """An HTTP request without the SDK: (status, headers, body)."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def assert_s3_error_xml(test, body, code):
    root = ET.fromstring(body)
    test.assertEqual(root.tag, "Error", body)
    test.assertEqual(root.findtext("Code"), code, body)


def setUpModule():
    # The gateway and the cluster come up together; wait for both (a deadline, not a sleep).
    deadline = time.monotonic() + 120
    last = None
    while time.monotonic() < deadline:
        try:
            client().list_buckets()
            return
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
            time.sleep(0.2)
    raise RuntimeError(f"the gateway never answered ListBuckets: {last!r}")


class Buckets(unittest.TestCase):
    def test_lifecycle(self):
        s3 = client()
        s3.create_bucket(Bucket="life")
        s3.head_bucket(Bucket="life")
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        self.assertIn("life", names)
        loc = s3.get_bucket_location(Bucket="life")
        self.assertIn(loc.get("LocationConstraint"), (None, "", "us-east-1"))
        with self.assertRaises(ClientError) as e:
            s3.create_bucket(Bucket="life")
        self.assertIn(error_code(e.exception), ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"))
        s3.put_object(Bucket="life", Key="k", Body=b"x")
        with self.assertRaises(ClientError) as e:
            s3.delete_bucket(Bucket="life")
        self.assertEqual(error_code(e.exception), "BucketNotEmpty")
        s3.delete_object(Bucket="life", Key="k")
        s3.delete_bucket(Bucket="life")
        with self.assertRaises(ClientError) as e:
            s3.head_bucket(Bucket="life")
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 404)

    def test_missing_bucket_is_no_such_bucket(self):
        s3 = client()
        with self.assertRaises(ClientError) as e:
            s3.get_object(Bucket="no-such-bucket-here", Key="k")
        self.assertEqual(error_code(e.exception), "NoSuchBucket")
        with self.assertRaises(ClientError) as e:
            s3.list_objects_v2(Bucket="no-such-bucket-here")
        self.assertEqual(error_code(e.exception), "NoSuchBucket")


class Objects(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s3 = client()
        cls.s3.create_bucket(Bucket="objects")

    def test_put_get_head_delete_sizes(self):
        for size in (0, 1, 5 * MIB + 1, 64 * MIB):
            with self.subTest(size=size):
                key = f"sized/{size}"
                body = data(size, size)
                put = self.s3.put_object(Bucket="objects", Key=key, Body=body,
                                         ContentType="application/x-test",
                                         Metadata={"color": "blue"})
                md5 = hashlib.md5(body).hexdigest()
                self.assertEqual(put["ETag"], f'"{md5}"')
                got = self.s3.get_object(Bucket="objects", Key=key)
                self.assertEqual(got["Body"].read(), body)
                self.assertEqual(got["ETag"], f'"{md5}"')
                head = self.s3.head_object(Bucket="objects", Key=key)
                self.assertEqual(head["ContentLength"], size)
                self.assertEqual(head["ContentType"], "application/x-test")
                self.assertEqual(head["Metadata"], {"color": "blue"})
                self.s3.delete_object(Bucket="objects", Key=key)
                with self.assertRaises(ClientError) as e:
                    self.s3.get_object(Bucket="objects", Key=key)
                self.assertEqual(error_code(e.exception), "NoSuchKey")

    def test_ranges(self):
        body = data(7, 3 * MIB + 17)
        self.s3.put_object(Bucket="objects", Key="ranged", Body=body)
        n = len(body)
        for rng, want in (
            ("bytes=0-0", body[0:1]),
            ("bytes=100-199", body[100:200]),
            (f"bytes={MIB - 5}-{2 * MIB + 5}", body[MIB - 5:2 * MIB + 6]),
            ("bytes=-10", body[n - 10:]),
            (f"bytes={n - 3}-", body[n - 3:]),
            (f"bytes=5-{n + 100}", body[5:]),
        ):
            with self.subTest(range=rng):
                got = self.s3.get_object(Bucket="objects", Key="ranged", Range=rng)
                self.assertEqual(got["Body"].read(), want)
                self.assertEqual(got["ResponseMetadata"]["HTTPStatusCode"], 206)
        with self.assertRaises(ClientError) as e:
            self.s3.get_object(Bucket="objects", Key="ranged", Range=f"bytes={n + 10}-")
        self.assertEqual(error_code(e.exception), "InvalidRange")

    def test_conditional_requests(self):
        body = b"conditional body"
        etag = self.s3.put_object(Bucket="objects", Key="cond", Body=body)["ETag"]
        got = self.s3.get_object(Bucket="objects", Key="cond", IfMatch=etag)
        self.assertEqual(got["Body"].read(), body)
        with self.assertRaises(ClientError) as e:
            self.s3.get_object(Bucket="objects", Key="cond", IfMatch='"0000"')
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 412)
        with self.assertRaises(ClientError) as e:
            self.s3.get_object(Bucket="objects", Key="cond", IfNoneMatch=etag)
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 304)
        future = time.time() + 3600
        past = time.time() - 3600
        with self.assertRaises(ClientError) as e:
            self.s3.get_object(Bucket="objects", Key="cond", IfModifiedSince=future)
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 304)
        with self.assertRaises(ClientError) as e:
            self.s3.get_object(Bucket="objects", Key="cond", IfUnmodifiedSince=past)
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 412)
        got = self.s3.get_object(Bucket="objects", Key="cond", IfModifiedSince=past)
        self.assertEqual(got["Body"].read(), body)

    def test_copy_and_delete_objects(self):
        body = data(11, 300_000)
        self.s3.put_object(Bucket="objects", Key="copy/src", Body=body, Metadata={"a": "1"})
        self.s3.copy_object(Bucket="objects", Key="copy/dst",
                            CopySource={"Bucket": "objects", "Key": "copy/src"})
        got = self.s3.get_object(Bucket="objects", Key="copy/dst")
        self.assertEqual(got["Body"].read(), body)
        self.assertEqual(got["Metadata"], {"a": "1"})
        self.s3.copy_object(Bucket="objects", Key="copy/dst2", MetadataDirective="REPLACE",
                            Metadata={"b": "2"},
                            CopySource={"Bucket": "objects", "Key": "copy/src"})
        self.assertEqual(self.s3.head_object(Bucket="objects", Key="copy/dst2")["Metadata"],
                         {"b": "2"})
        out = self.s3.delete_objects(Bucket="objects", Delete={"Objects": [
            {"Key": "copy/src"}, {"Key": "copy/dst"}, {"Key": "copy/dst2"}]})
        self.assertEqual(sorted(d["Key"] for d in out["Deleted"]),
                         ["copy/dst", "copy/dst2", "copy/src"])
        listed = self.s3.list_objects_v2(Bucket="objects", Prefix="copy/")
        self.assertEqual(listed.get("KeyCount"), 0)

    def test_wrong_secret_and_read_only_key(self):
        bad = client(secret="not-the-secret")
        with self.assertRaises(ClientError) as e:
            bad.list_objects_v2(Bucket="objects")
        self.assertEqual(error_code(e.exception), "SignatureDoesNotMatch")
        # s3s raises this one itself; the gateway still gives it a human message.
        self.assertTrue(e.exception.response["Error"].get("Message"), e.exception.response)
        reader = client(key="TESTREADER", secret="test-reader-secret")
        self.s3.put_object(Bucket="objects", Key="ro", Body=b"read me")
        self.assertEqual(reader.get_object(Bucket="objects", Key="ro")["Body"].read(), b"read me")
        with self.assertRaises(ClientError) as e:
            reader.put_object(Bucket="objects", Key="ro", Body=b"overwritten")
        self.assertEqual(error_code(e.exception), "AccessDenied")
        self.assertEqual(self.s3.get_object(Bucket="objects", Key="ro")["Body"].read(), b"read me")

    def test_presigned_get_and_put(self):
        body = data(13, 123_457)
        self.s3.put_object(Bucket="objects", Key="presigned", Body=body)
        # boto3 presigns with SigV2 query parameters unless told otherwise; both are served.
        v4 = client(signature_version="s3v4")
        for signer, sig_param in ((self.s3, "Signature"), (v4, "X-Amz-Signature")):
            with self.subTest(signature=sig_param):
                get_url = signer.generate_presigned_url(
                    "get_object", Params={"Bucket": "objects", "Key": "presigned"},
                    ExpiresIn=300)
                status, _, got = raw("GET", get_url)
                self.assertEqual(status, 200, got[:500])
                self.assertEqual(got, body)
                # A tampered signature is refused with S3's XML.
                parts = urllib.parse.urlsplit(get_url)
                query = urllib.parse.parse_qsl(parts.query)
                self.assertIn(sig_param, dict(query))
                query = [(k, "0" * len(v) if k == sig_param else v) for k, v in query]
                tampered = urllib.parse.urlunsplit(
                    parts._replace(query=urllib.parse.urlencode(query)))
                status, _, err = raw("GET", tampered)
                self.assertEqual(status, 403, err)
                assert_s3_error_xml(self, err, "SignatureDoesNotMatch")
        body2 = data(14, 54_321)
        put_url = v4.generate_presigned_url(
            "put_object", Params={"Bucket": "objects", "Key": "presigned-put"}, ExpiresIn=300)
        status, _, err = raw("PUT", put_url, body2, {"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 200, err)
        got = self.s3.get_object(Bucket="objects", Key="presigned-put")["Body"].read()
        self.assertEqual(got, body2)

    def test_error_bodies_are_s3_xml(self):
        status, _, body = raw("GET", f"{URL}/objects/whatever")
        self.assertEqual(status, 403)
        root = ET.fromstring(body)
        self.assertEqual(root.tag, "Error", body)
        self.assertIsNotNone(root.findtext("Code"))
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": "no-such-bucket-here", "Key": "k"}, ExpiresIn=300)
        status, _, body = raw("GET", url)
        self.assertEqual(status, 404)
        assert_s3_error_xml(self, body, "NoSuchBucket")
        url = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": "objects", "Key": "no/such/key"}, ExpiresIn=300)
        status, _, body = raw("GET", url)
        self.assertEqual(status, 404)
        assert_s3_error_xml(self, body, "NoSuchKey")


class Listing(unittest.TestCase):
    def test_list_v2_pages_prefixes_and_delimiters_equal_a_model(self):
        s3 = client()
        s3.create_bucket(Bucket="listing")
        keys = []
        for i in range(2000):
            top = ("a", "b", "c/d", "c/e")[i % 4]
            keys.append(f"{top}/{i % 7}/k{i:05d}")
        for k in keys:
            s3.put_object(Bucket="listing", Key=k, Body=k.encode())
        model = sorted(keys)
        # Everything, in pages of 333.
        got, token = [], None
        while True:
            kw = {"Bucket": "listing", "MaxKeys": 333}
            if token:
                kw["ContinuationToken"] = token
            page = s3.list_objects_v2(**kw)
            got += [o["Key"] for o in page.get("Contents", [])]
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
        self.assertEqual(got, model)
        # Prefix and delimiter, paginated by the SDK.
        for prefix, delim in (("c/", "/"), ("", "/"), ("a/3/", ""), ("b/", "/")):
            with self.subTest(prefix=prefix, delimiter=delim):
                keys_got, prefixes_got = [], []
                kw = {"Bucket": "listing", "Prefix": prefix, "PaginationConfig": {"PageSize": 50}}
                if delim:
                    kw["Delimiter"] = delim
                for page in s3.get_paginator("list_objects_v2").paginate(**kw):
                    keys_got += [o["Key"] for o in page.get("Contents", [])]
                    prefixes_got += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                want_keys, want_prefixes = [], set()
                for k in model:
                    if not k.startswith(prefix):
                        continue
                    rest = k[len(prefix):]
                    if delim and delim in rest:
                        want_prefixes.add(prefix + rest.split(delim)[0] + delim)
                    else:
                        want_keys.append(k)
                self.assertEqual(keys_got, want_keys)
                self.assertEqual(sorted(prefixes_got), sorted(want_prefixes))
        # start-after, and V1 with a marker.
        page = s3.list_objects_v2(Bucket="listing", StartAfter=model[1000], MaxKeys=5)
        self.assertEqual([o["Key"] for o in page["Contents"]], model[1001:1006])
        page = s3.list_objects(Bucket="listing", Marker=model[1500], MaxKeys=7)
        self.assertEqual([o["Key"] for o in page["Contents"]], model[1501:1508])


class AwsCli(unittest.TestCase):
    def aws(self, *args):
        return subprocess.run(["aws", "--endpoint-url", URL, "s3", *args], check=True,
                              capture_output=True, text=True, timeout=600)

    def test_sync_a_tree_up_and_back(self):
        client().create_bucket(Bucket="synced")
        with tempfile.TemporaryDirectory(dir=WORK) as up, \
                tempfile.TemporaryDirectory(dir=WORK) as down:
            files = {}
            for i in range(40):
                rel = os.path.join(f"dir{i % 3}", f"sub{i % 2}", f"f{i}.bin")
                body = data(1000 + i, (i * 7919) % 300_000)
                path = os.path.join(up, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(body)
                files[rel] = body
            self.aws("sync", up, "s3://synced/tree")
            self.aws("sync", "s3://synced/tree", down)
            got = {}
            for base, _, names in os.walk(down):
                for n in names:
                    p = os.path.join(base, n)
                    with open(p, "rb") as f:
                        got[os.path.relpath(p, down)] = f.read()
            self.assertEqual(got, files)


class Multipart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s3 = client()
        cls.s3.create_bucket(Bucket="multipart")

    def test_three_parts_etag_and_bytes(self):
        s3 = self.s3
        parts = [data(2001, 5 * MIB), data(2002, 5 * MIB), data(2003, 1)]
        up = s3.create_multipart_upload(Bucket="multipart", Key="three", ContentType="text/plain",
                                        Metadata={"color": "blue"})
        uid = up["UploadId"]
        done = []
        for n, body in enumerate(parts, start=1):
            r = s3.upload_part(Bucket="multipart", Key="three", UploadId=uid, PartNumber=n,
                               Body=body)
            self.assertEqual(r["ETag"], f'"{hashlib.md5(body).hexdigest()}"')
            done.append({"PartNumber": n, "ETag": r["ETag"]})
        listed = s3.list_parts(Bucket="multipart", Key="three", UploadId=uid)
        self.assertEqual([(p["PartNumber"], p["Size"]) for p in listed["Parts"]],
                         [(1, 5 * MIB), (2, 5 * MIB), (3, 1)])
        uploads = s3.list_multipart_uploads(Bucket="multipart", Prefix="three")
        self.assertIn(uid, [u["UploadId"] for u in uploads.get("Uploads", [])])
        r = s3.complete_multipart_upload(Bucket="multipart", Key="three", UploadId=uid,
                                         MultipartUpload={"Parts": done})
        digests = b"".join(hashlib.md5(p).digest() for p in parts)
        want = f'"{hashlib.md5(digests).hexdigest()}-3"'
        self.assertEqual(r["ETag"], want)
        got = s3.get_object(Bucket="multipart", Key="three")
        self.assertEqual(got["ETag"], want)
        self.assertEqual(got["ContentType"], "text/plain")
        self.assertEqual(got["Metadata"], {"color": "blue"})
        self.assertEqual(got["Body"].read(), b"".join(parts))

    def test_abort_and_refused_completion(self):
        s3 = self.s3
        uid = s3.create_multipart_upload(Bucket="multipart", Key="refused")["UploadId"]
        p1 = s3.upload_part(Bucket="multipart", Key="refused", UploadId=uid, PartNumber=1,
                            Body=data(2004, 5 * MIB))["ETag"]
        p2 = s3.upload_part(Bucket="multipart", Key="refused", UploadId=uid, PartNumber=2,
                            Body=b"tail")["ETag"]
        for parts, code in [
            ([{"PartNumber": 2, "ETag": p2}, {"PartNumber": 1, "ETag": p1}], "InvalidPartOrder"),
            ([{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p1}], "InvalidPart"),
        ]:
            with self.assertRaises(ClientError) as e:
                s3.complete_multipart_upload(Bucket="multipart", Key="refused", UploadId=uid,
                                             MultipartUpload={"Parts": parts})
            self.assertEqual(error_code(e.exception), code)
        s3.abort_multipart_upload(Bucket="multipart", Key="refused", UploadId=uid)
        with self.assertRaises(ClientError) as e:
            s3.list_parts(Bucket="multipart", Key="refused", UploadId=uid)
        self.assertEqual(error_code(e.exception), "NoSuchUpload")
        with self.assertRaises(ClientError) as e:
            s3.head_object(Bucket="multipart", Key="refused")
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 404)

    def test_upload_part_copy_and_part_number_reads(self):
        s3 = self.s3
        src = data(2101, 5 * MIB + 1000)
        s3.put_object(Bucket="multipart", Key="copy-src", Body=src)
        src_etag = f'"{hashlib.md5(src).hexdigest()}"'
        uid = s3.create_multipart_upload(Bucket="multipart", Key="copied")["UploadId"]
        source = {"Bucket": "multipart", "Key": "copy-src"}
        ranges = [(0, 5 * MIB - 1), (5 * MIB, len(src) - 1)]
        done = []
        for n, (first, last) in enumerate(ranges, start=1):
            r = s3.upload_part_copy(Bucket="multipart", Key="copied", UploadId=uid, PartNumber=n,
                                    CopySource=source, CopySourceRange=f"bytes={first}-{last}",
                                    CopySourceIfMatch=src_etag)
            etag = r["CopyPartResult"]["ETag"]
            self.assertEqual(etag, f'"{hashlib.md5(src[first:last + 1]).hexdigest()}"')
            self.assertIn("LastModified", r["CopyPartResult"])
            done.append({"PartNumber": n, "ETag": etag})
        for kw, code in (({"CopySourceRange": f"bytes=0-{len(src)}"}, "InvalidArgument"),
                         ({"CopySourceIfNoneMatch": src_etag}, "PreconditionFailed")):
            with self.subTest(code=code), self.assertRaises(ClientError) as e:
                s3.upload_part_copy(Bucket="multipart", Key="copied", UploadId=uid, PartNumber=3,
                                    CopySource=source, **kw)
            self.assertEqual(error_code(e.exception), code)
        s3.complete_multipart_upload(Bucket="multipart", Key="copied", UploadId=uid,
                                     MultipartUpload={"Parts": done})
        self.assertEqual(s3.get_object(Bucket="multipart", Key="copied")["Body"].read(), src)
        # partNumber: the second part's bytes, its place and the parts count.
        got = s3.get_object(Bucket="multipart", Key="copied", PartNumber=2)
        self.assertEqual(got["ResponseMetadata"]["HTTPStatusCode"], 206)
        self.assertEqual(got["Body"].read(), src[5 * MIB:])
        self.assertEqual(got["PartsCount"], 2)
        self.assertEqual(got["ContentRange"], f"bytes {5 * MIB}-{len(src) - 1}/{len(src)}")
        head = s3.head_object(Bucket="multipart", Key="copied", PartNumber=1)
        self.assertEqual((head["ContentLength"], head["PartsCount"]), (5 * MIB, 2))
        with self.assertRaises(ClientError) as e:
            s3.get_object(Bucket="multipart", Key="copied", PartNumber=3)
        self.assertEqual(error_code(e.exception), "InvalidPartNumber")
        s3.delete_objects(Bucket="multipart", Delete={"Objects": [
            {"Key": "copy-src"}, {"Key": "copied"}]})

    def test_list_multipart_uploads_with_a_delimiter(self):
        s3 = self.s3
        keys = ["dl/a/1", "dl/a/2", "dl/b/c/1", "dl/top"]
        ids = [s3.create_multipart_upload(Bucket="multipart", Key=k)["UploadId"] for k in keys]
        try:
            r = s3.list_multipart_uploads(Bucket="multipart", Prefix="dl/", Delimiter="/")
            self.assertEqual([p["Prefix"] for p in r.get("CommonPrefixes", [])],
                             ["dl/a/", "dl/b/"])
            self.assertEqual([u["Key"] for u in r.get("Uploads", [])], ["dl/top"])
            # The SDK's paginator, one entry a page, sees the same.
            pages = s3.get_paginator("list_multipart_uploads").paginate(
                Bucket="multipart", Prefix="dl/", Delimiter="/", MaxUploads=1)
            seen = []
            for page in pages:
                seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                seen += [u["Key"] for u in page.get("Uploads", [])]
            self.assertEqual(sorted(seen), ["dl/a/", "dl/b/", "dl/top"])
        finally:
            for k, uid in zip(keys, ids):
                s3.abort_multipart_upload(Bucket="multipart", Key=k, UploadId=uid)

    def test_aws_cli_cp_200_mib_up_and_down(self):
        with tempfile.TemporaryDirectory(dir=WORK) as d:
            up, down = os.path.join(d, "up.bin"), os.path.join(d, "down.bin")
            with open(up, "wb") as f:
                for _ in range(200):
                    f.write(os.urandom(MIB))
            aws = ["aws", "--endpoint-url", URL, "s3", "cp"]
            subprocess.run([*aws, up, "s3://multipart/big.bin"], check=True,
                           capture_output=True, text=True, timeout=900)
            head = self.s3.head_object(Bucket="multipart", Key="big.bin")
            self.assertEqual(head["ContentLength"], 200 * MIB)
            self.assertRegex(head["ETag"], r'^"[0-9a-f]{32}-[0-9]+"$')  # uploaded in parts
            subprocess.run([*aws, "s3://multipart/big.bin", down], check=True,
                           capture_output=True, text=True, timeout=900)
            with open(up, "rb") as a, open(down, "rb") as b:
                while True:
                    x, y = a.read(MIB), b.read(MIB)
                    self.assertTrue(x == y, "downloaded bytes differ")
                    if not x:
                        break
        self.s3.delete_object(Bucket="multipart", Key="big.bin")


if __name__ == "__main__":
    unittest.main()
