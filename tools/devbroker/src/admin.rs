//! AlterConfigs (API key 33), which Tansu does not route: each resource's configs are
//! applied as SET operations through the storage's incremental alter, so tools that use
//! the classic API (librdkafka's `AlterConfigs`, `habitat topics apply --alter`) work.

use rama::{Context, Service};
use tansu_sans_io::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, ErrorCode,
    alter_configs_response::AlterConfigsResourceResponse,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
};
use tansu_storage::{Error, Result, Storage};

use crate::storage::DevStorage;

/// IncrementalAlterConfigs' SET operation.
const SET: i8 = 0;

#[derive(Clone, Copy, Debug, Default)]
pub struct AlterConfigsService;

impl ApiKey for AlterConfigsService {
    const KEY: i16 = AlterConfigsRequest::KEY;
}

impl Service<DevStorage, AlterConfigsRequest> for AlterConfigsService {
    type Response = AlterConfigsResponse;
    type Error = Error;

    async fn serve(
        &self,
        ctx: Context<DevStorage>,
        req: AlterConfigsRequest,
    ) -> Result<Self::Response, Self::Error> {
        let mut responses = Vec::new();
        for resource in req.resources.unwrap_or_default() {
            let configs = resource
                .configs
                .unwrap_or_default()
                .into_iter()
                .map(|config| {
                    AlterableConfig::default()
                        .name(config.name)
                        .config_operation(SET)
                        .value(config.value)
                })
                .collect();
            let (code, message) = if req.validate_only {
                (ErrorCode::None, None)
            } else {
                match ctx
                    .state()
                    .incremental_alter_resource(
                        AlterConfigsResource::default()
                            .resource_type(resource.resource_type)
                            .resource_name(resource.resource_name.clone())
                            .configs(Some(configs)),
                    )
                    .await
                {
                    Ok(response) => (
                        ErrorCode::try_from(response.error_code)
                            .unwrap_or(ErrorCode::UnknownServerError),
                        response.error_message,
                    ),
                    Err(Error::Api(code)) => (code, None),
                    Err(error) => (ErrorCode::UnknownServerError, Some(format!("{error:?}"))),
                }
            };
            responses.push(
                AlterConfigsResourceResponse::default()
                    .error_code(code.into())
                    .error_message(message.filter(|m| !m.is_empty()))
                    .resource_type(resource.resource_type)
                    .resource_name(resource.resource_name),
            );
        }
        Ok(AlterConfigsResponse::default()
            .throttle_time_ms(0)
            .responses(Some(responses)))
    }
}
