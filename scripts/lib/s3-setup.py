# Makes the S3 stand-in (moto, with authentication on) ready for the tests: an IAM user with
# an access key allowed s3:*, and the bucket `bunko-test`. Prints "KEY_ID SECRET".
# The first four actions are the only unauthenticated ones (INITIAL_NO_AUTH_ACTION_COUNT=4).
import boto3, json, sys
ep = sys.argv[1]
kw = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="bunko")
iam.put_user_policy(UserName="bunko", PolicyName="s3", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="bunko")["AccessKey"]
s3 = boto3.client("s3", **kw)
s3.create_bucket(Bucket="bunko-test")
print(k["AccessKeyId"], k["SecretAccessKey"])
