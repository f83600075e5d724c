//! An AccessDenied from S3 is explained: the action, the resource, and the statement that
//! would allow it. The "S3" here is a server on 127.0.0.1 that denies everything.

use lake_aws::AwsSpec;
use lake_aws::{Aws, S3ZoneStore};
use lake_core::zone::{Key, ZoneStore, ZoneStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn denying_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/ci is not authorized</Message><RequestId>1</RequestId></Error>";
                let reply = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn access_denied_names_the_action_resource_and_statement() {
    let url = denying_server().await;
    let aws = Aws::load(&AwsSpec {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url),
        max_attempts: 1,
        connect_timeout: std::time::Duration::from_secs(2),
        operation_timeout: std::time::Duration::from_secs(10),
        ..AwsSpec::default()
    })
    .await;
    // Dummy keys of its own, so the test needs nothing from the environment.
    let conf = aws_sdk_s3::config::Builder::from(aws.sdk())
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDLAKETEST",
            "not-a-secret",
            None,
            None,
            "lake-test",
        ))
        .force_path_style(true)
        .build();
    let store = S3ZoneStore::new(aws_sdk_s3::Client::from_conf(conf), "my-bucket", "credit");
    let k = Key::new("raw/credit/ingest_date=2024-03-01/a.csv").unwrap();
    let err = store.put_bytes(&k, "x".into()).await.unwrap_err();
    // Typed: lake-aws's error as the store error's cause, and a denial is fixed, not retried.
    assert_eq!(err.kind(), lake_core::ErrorKind::Refused);
    let cause = std::error::Error::source(&err)
        .and_then(|c| c.downcast_ref::<lake_core::Cause>())
        .expect("the cause is lake-aws's classified error");
    assert!(
        matches!(
            cause.get_ref().downcast_ref::<lake_aws::AwsError>(),
            Some(lake_aws::AwsError::Denied {
                action: "s3:PutObject",
                ..
            })
        ),
        "{cause:?}"
    );
    let e = lake_core::run::error_chain(&err);
    assert!(
        e.contains("AccessDenied: this identity may not s3:PutObject on arn:aws:s3:::my-bucket/credit/raw/credit/ingest_date=2024-03-01/a.csv")
            && e.contains("\"Action\": \"s3:PutObject\"")
            && e.contains("lake iam-policy"),
        "{e}"
    );
    let e = lake_core::run::error_chain(&store.list("raw").await.unwrap_err());
    assert!(
        e.contains("may not s3:ListBucket on arn:aws:s3:::my-bucket "),
        "{e}"
    );
}
