/**
 * A second IAM user in moto, with access keys of its own, for a test that needs a caller other than the default one
 * (a pipeline writer beside the rollback). The project's dependencies hold no IAM client, so the two Query API calls
 * (CreateUser, CreateAccessKey) are posted as the SDK would; moto does not check the request signature and routes
 * by the credential scope's service name. moto then maps the keys to that user (GetCallerIdentity answers its ARN).
 */
export interface IamUser {
  arn: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
}

async function iamCall(params: Record<string, string>): Promise<string> {
  const endpoint = process.env.AWS_ENDPOINT_URL;
  if (!endpoint) throw new Error('AWS_ENDPOINT_URL is not set: IAM users are made in the test run\'s moto server');
  const date = new Date().toISOString().slice(0, 10).replace(/-/g, '');
  const res = await fetch(endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
      authorization: `AWS4-HMAC-SHA256 Credential=${process.env.AWS_ACCESS_KEY_ID ?? 'testing'}/${date}/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0`,
    },
    body: new URLSearchParams({ ...params, Version: '2010-05-08' }).toString(),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`IAM ${params.Action} failed (${res.status}): ${text.slice(0, 300)}`);
  return text;
}

const field = (xml: string, name: string): string => {
  const m = new RegExp(`<${name}>([^<]*)</${name}>`).exec(xml);
  if (!m) throw new Error(`IAM answer without <${name}>: ${xml.slice(0, 300)}`);
  return m[1]!;
};

export async function createIamUser(name: string): Promise<IamUser> {
  const user = await iamCall({ Action: 'CreateUser', UserName: name });
  const key = await iamCall({ Action: 'CreateAccessKey', UserName: name });
  return { arn: field(user, 'Arn'), credentials: { accessKeyId: field(key, 'AccessKeyId'), secretAccessKey: field(key, 'SecretAccessKey') } };
}
